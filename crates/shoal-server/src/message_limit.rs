//! Oversized messages get `RESOURCE_EXHAUSTED`.
//!
//! tonic rejects a request larger than `--max-message-bytes` while decoding it, with
//! `OUT_OF_RANGE`. The gRPC status-code guide assigns exceeded size limits to
//! `RESOURCE_EXHAUSTED`, which is what clients retry-classify on, so this layer
//! rewrites exactly that rejection (matched by tonic's message) on its way out.

use http::{HeaderValue, Response};

const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// Rewrites tonic's message-too-large `OUT_OF_RANGE` into `RESOURCE_EXHAUSTED`.
pub fn remap_too_large<B>(mut resp: Response<B>) -> Response<B> {
    let h = resp.headers();
    let is_out_of_range = h.get("grpc-status").is_some_and(|s| s == "11");
    let too_large = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| {
            m.starts_with(&TONIC_TOO_LARGE.replace(' ', "%20")) || m.starts_with(TONIC_TOO_LARGE)
        });
    if is_out_of_range && too_large {
        resp.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("8"));
        resp.headers_mut().insert(
            "grpc-message",
            HeaderValue::from_static(
                "request: the message is larger than the server's --max-message-bytes",
            ),
        );
    }
    resp
}
