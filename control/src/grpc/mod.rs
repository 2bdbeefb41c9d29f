//! The gRPC front end: `HttpsConfigService` (admin), `FleetService` (agents), health and
//! reflection. Errors are mapped to `tonic::Status` here and nowhere else.

use tonic::Status;

use crate::service::PolicyError;

pub mod admin;
pub mod calls;
pub mod fleet;
mod listener;
pub mod peers;
pub mod requests;
pub mod sync;

pub use admin::AdminService;
pub use fleet::FleetServer;
pub use listener::limited_incoming;
pub use sync::{SyncLimits, SyncServer};

/// The one mapping of policy errors to gRPC status codes.
pub(crate) fn status(e: PolicyError) -> Status {
    match e {
        PolicyError::Invalid(v) => Status::invalid_argument(v.message),
        PolicyError::Unavailable(m) => Status::unavailable(m),
        PolicyError::OutcomeUnknown(m) => Status::deadline_exceeded(m),
        PolicyError::Downgrade(m) | PolicyError::Precondition(m) => Status::failed_precondition(m),
        PolicyError::BadRequest(m) => Status::invalid_argument(m),
        PolicyError::Internal(m) => Status::internal(m),
    }
}
