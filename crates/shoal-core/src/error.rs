//! The one error type of `shoal-core`, shared by the layers above as their domain error
//! vocabulary. `shoal-server` is the only place that turns it into a `tonic::Status`.

/// What can go wrong with a request, independent of transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// A field of the request is malformed. `field` is a path such as
    /// `points[3].vector[17]`.
    #[error("invalid argument: {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    /// A request exceeds a configured limit (batch size, message size, `top_k`, …).
    #[error("resource exhausted: {field}: {reason}")]
    ResourceExhausted { field: String, reason: String },
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The named thing exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request is well formed but the cluster is not in a state that allows it
    /// (e.g. removing a node that still holds replicas); retrying will not help until
    /// that state changes.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// The service cannot take the request now; retrying later may succeed. For a
    /// write: it was provably not written (no log took it), so treating it as not
    /// written is safe.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A write whose outcome is unknown: it may have been committed, or may still
    /// commit, though the node stopped waiting for it. Retrying the same write is safe
    /// (upserts and deletes are idempotent); treating it as not written is not.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// A bug or an environment failure (disk error, corrupt record, …).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::ResourceExhausted`].
    pub fn exhausted(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::ResourceExhausted {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Longest piece of a client's input repeated in an error message, in bytes.
pub const MAX_ECHO: usize = 64;

/// `input` as an error message may repeat it: at most [`MAX_ECHO`] bytes (cut at a
/// character boundary, `…` marking the cut), quoted. A message echoing a 1 MB id
/// whole would break the client's header limit.
pub fn echo(input: &str) -> String {
    if input.len() <= MAX_ECHO {
        return format!("{input:?}");
    }
    let mut end = MAX_ECHO;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &input[..end], input.len())
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_short() {
        assert_eq!(echo("abc"), "\"abc\"");
        let long = "é".repeat(1 << 19);
        let e = echo(&long);
        assert!(e.len() < MAX_ECHO + 32, "{e}");
        assert!(e.ends_with("(1048576 bytes)"), "{e}");
    }
}
