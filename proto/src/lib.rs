//! Generated code for the `tlsfleet.v1` gRPC API. No logic lives here.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("tlsfleet.v1");

    /// Encoded `FileDescriptorSet` for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("tlsfleet_descriptor");
}

pub mod auth;
pub mod convert;
