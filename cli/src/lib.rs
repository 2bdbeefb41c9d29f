//! `tlsfleetctl` as a library: the binary (`main.rs`) parses the flags and calls [`app::run`];
//! the tests in `cli/tests/` drive the same path against in-process servers.
//!
//! * [`args`]: the flags; [`app`]: flags → command → output; [`commands`]: what each command
//!   asks the control plane; [`client`]: the gRPC connection and its deadlines;
//!   [`signer`]: the access key; [`output`]: the human and JSON renderings; [`error`]: the
//!   errors and their exit codes; [`docs`]: shell completions and the manual pages.

pub mod app;
pub mod args;
pub mod client;
pub mod commands;
pub mod docs;
pub mod error;
pub mod output;
pub mod signer;
pub mod wait;
