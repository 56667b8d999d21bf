//! `shoal_native`: the transport of the shoal Python client, compiled.
//!
//! One `Channel` per node: a tonic channel on a current-thread tokio runtime that
//! only runs while a call is in progress. `call(path, request, timeout)` sends an
//! already-encoded request (the Python client encodes and parses; this moves bytes)
//! and returns the reply's bytes, with the GIL released for the whole call. A failed
//! call raises `RpcStatus(code, message)` with the gRPC status code as an int.

use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel as TonicChannel, Endpoint};
use tonic::Status;

create_exception!(
    shoal_native,
    RpcStatus,
    PyException,
    "A gRPC call failed: args are (code: int, message: str)."
);

/// Bytes in, bytes out: the request is already protobuf-encoded.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// A connection to one node.
#[pyclass(frozen)]
struct Channel {
    rt: tokio::runtime::Runtime,
    channel: TonicChannel,
    max_message_bytes: usize,
}

#[pymethods]
impl Channel {
    /// `address`: `host:port`. Connects lazily (at the first call) and reconnects
    /// after failures.
    #[new]
    #[pyo3(signature = (address, max_message_bytes = 64 << 20))]
    fn new(address: &str, max_message_bytes: usize) -> PyResult<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyValueError::new_err(format!("tokio runtime: {e}")))?;
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| PyValueError::new_err(format!("address {address:?}: {e}")))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        let channel = {
            let _guard = rt.enter();
            endpoint.connect_lazy()
        };
        Ok(Channel {
            rt,
            channel,
            max_message_bytes,
        })
    }

    /// Sends `request` (encoded) to the unary method `path` (e.g.
    /// `/shoal.v1.Points/Search`) and returns the encoded reply.
    #[pyo3(signature = (path, request, timeout = None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        request: &[u8],
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let path = PathAndQuery::from_str(path)
            .map_err(|e| PyValueError::new_err(format!("path: {e}")))?;
        let body = Bytes::copy_from_slice(request);
        let channel = self.channel.clone();
        let max = self.max_message_bytes;
        let result: Result<Bytes, Status> = py.detach(|| {
            self.rt.block_on(async move {
                let mut grpc = tonic::client::Grpc::new(channel)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max);
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(format!("connect: {e}")))?;
                let mut req = tonic::Request::new(body);
                if let Some(t) = timeout {
                    req.set_timeout(Duration::from_secs_f64(t.max(0.0)));
                }
                let call = grpc.unary(req, path, RawCodec);
                let reply = match timeout {
                    Some(t) => {
                        match tokio::time::timeout(Duration::from_secs_f64(t.max(0.0)), call).await
                        {
                            Ok(r) => r?,
                            Err(_) => return Err(Status::deadline_exceeded("deadline exceeded")),
                        }
                    }
                    None => call.await?,
                };
                Ok(reply.into_inner())
            })
        });
        match result {
            Ok(b) => Ok(PyBytes::new(py, &b)),
            Err(s) => Err(RpcStatus::new_err((
                s.code() as i32,
                s.message().to_string(),
            ))),
        }
    }
}

#[pymodule]
fn shoal_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Channel>()?;
    m.add("RpcStatus", m.py().get_type::<RpcStatus>())?;
    Ok(())
}
