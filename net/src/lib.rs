//! Connection guards shared by the agent's TLS listener and the control plane's REST listener.
//!
//! * [`ConnLimiter`]: at most N open connections in total and M per source address; a
//!   connection over either cap is refused at accept.
//! * [`Activity`]: counts a connection's requests in flight (a response counts until its body
//!   has been sent) and tells when it has had none for a while, so that a connection that
//!   sends nothing, or stops sending, is closed whatever its protocol; and when a response
//!   has been waiting for the peer to take it for too long (a client that stopped reading).
//! * [`Backoff`]: retry delays, exponential with full jitter (agents reconnecting, the
//!   control plane's store watch relisting).
//! * [`parse_duration`]: how every duration flag of the binaries is written (`10s`, `500ms`).

mod activity;
mod backoff;
mod duration;
mod limit;

pub use activity::{Activity, Held, HoldBody, RequestGuard, Sending, SendingBody};
pub use backoff::Backoff;
pub use duration::parse_duration;
pub use limit::{ConnLimiter, ConnPermit, LimitExceeded};
