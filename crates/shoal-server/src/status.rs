//! The one place where domain errors become gRPC statuses.
//!
//! A status message travels in an HTTP/2 header, which clients cap (8 KiB by
//! default in grpc-go and tonic): validation already cuts the input it echoes
//! (`shoal_core::error::echo`), and every message is cut to [`MAX_MESSAGE`] bytes
//! here as well, whatever produced it.

use shoal_core::Error;
use tonic::Status;

/// Longest status message sent, in bytes.
pub const MAX_MESSAGE: usize = 1024;

/// Maps a domain error to the status a client sees. Messages keep the field path.
pub fn to_status(e: Error) -> Status {
    let s = status_of(e);
    if s.message().len() <= MAX_MESSAGE {
        return s;
    }
    Status::new(s.code(), clip(s.message()))
}

/// `m` cut to [`MAX_MESSAGE`] bytes at a character boundary, the cut marked.
fn clip(m: &str) -> String {
    let mut end = MAX_MESSAGE - 32;
    while !m.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &m[..end], m.len() - end)
}

fn status_of(e: Error) -> Status {
    match e {
        Error::InvalidArgument { field, reason } => {
            Status::invalid_argument(format!("{field}: {reason}"))
        }
        Error::ResourceExhausted { field, reason } => {
            Status::resource_exhausted(format!("{field}: {reason}"))
        }
        Error::NotFound(what) => Status::not_found(format!("{what} not found")),
        Error::AlreadyExists(what) => Status::already_exists(format!("{what} already exists")),
        Error::FailedPrecondition(why) => Status::failed_precondition(why),
        Error::Unavailable(why) => Status::unavailable(why),
        // gRPC's DEADLINE_EXCEEDED: "for operations that change the state of the
        // system, this error may be returned even if the operation has completed".
        Error::OutcomeUnknown(why) => Status::deadline_exceeded(why),
        Error::Internal(why) => {
            tracing::error!(error = %why, "internal error");
            Status::internal(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_short() {
        let huge = "ü".repeat(1 << 20);
        for e in [
            Error::invalid("points[0].id", huge.clone()),
            Error::NotFound(huge.clone()),
            Error::Internal(huge.clone()),
        ] {
            let s = to_status(e);
            assert!(s.message().len() <= MAX_MESSAGE, "{}", s.message().len());
            assert!(s.message().ends_with("bytes cut)"));
        }
        let s = to_status(Error::invalid("top_k", "0 is out of range"));
        assert_eq!(s.message(), "top_k: 0 is out of range");
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
    }
}
