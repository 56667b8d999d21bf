//! Statuses tonic produces before our handlers run, mapped to the codes Shoal's API
//! promises for bad input.
//!
//! - A request larger than `--max-message-bytes` is rejected by tonic's decoder with
//!   `OUT_OF_RANGE`; the gRPC status-code guide assigns exceeded size limits to
//!   `RESOURCE_EXHAUSTED`, which is what clients classify on.
//! - A request that is not valid protobuf (garbage bytes, or messages nested beyond
//!   prost's recursion limit, e.g. a filter nested ~50 levels deep) is rejected by
//!   tonic-prost with `INTERNAL`, which tells a client "server bug, retry". It is the
//!   client's input that is wrong: `INVALID_ARGUMENT`.
//!
//! Both rejections happen in trailers-only responses, so the status is in the
//! response headers, where this layer rewrites it. They are matched by tonic's exact
//! messages; anything else passes through untouched.

use http::{HeaderValue, Response};

const TOO_LARGE: &str = "Error, decoded message length too large";
const UNDECODABLE: &str = "failed to decode Protobuf message";

fn message_starts_with(headers: &http::HeaderMap, prefix: &str) -> bool {
    headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.starts_with(prefix) || m.starts_with(&prefix.replace(' ', "%20")))
}

/// Rewrites the two early rejections described in the module docs.
pub fn remap<B>(mut resp: Response<B>) -> Response<B> {
    let h = resp.headers();
    let status = h
        .get("grpc-status")
        .and_then(|s| s.to_str().ok())
        .unwrap_or("");
    let (code, message) = match status {
        "11" if message_starts_with(h, TOO_LARGE) => (
            "8",
            "request: the message is larger than the server's --max-message-bytes",
        ),
        "13" if message_starts_with(h, UNDECODABLE) => (
            "3",
            "request: not a valid protobuf message for this method (or nested too deeply)",
        ),
        _ => return resp,
    };
    resp.headers_mut()
        .insert("grpc-status", HeaderValue::from_static(code));
    resp.headers_mut()
        .insert("grpc-message", HeaderValue::from_static(message));
    resp
}
