//! The `tlsfleet.v1` gRPC wire contract: the generated code ([`v1`], with every method path
//! in [`v1::methods`]), the request-signing scheme ([`auth`]) and its one client-side
//! interceptor ([`signer`]), and the conversions to the policy types ([`convert`]).

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("tlsfleet.v1");

    /// Encoded `FileDescriptorSet` for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tlsfleet_descriptor");

    /// The gRPC method paths (`/tlsfleet.v1.Service/Method`), generated from the same
    /// descriptors as the code above.
    pub mod methods {
        include!(concat!(env!("OUT_DIR"), "/tlsfleet_methods.rs"));
    }
}

pub mod auth;
pub mod convert;
pub mod frame;
pub mod json;
pub mod signer;
