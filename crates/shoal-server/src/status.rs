//! The one place where domain errors become gRPC statuses.

use shoal_core::Error;
use tonic::Status;

/// Maps a domain error to the status a client sees. Messages keep the field path.
pub fn to_status(e: Error) -> Status {
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
        Error::Internal(why) => {
            tracing::error!(error = %why, "internal error");
            Status::internal(why)
        }
    }
}
