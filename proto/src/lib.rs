//! Generated code for the `tlsfleet.v1` gRPC API. No logic lives here.

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
