//! Strand's gRPC API: the generated tonic/prost code for `proto/strand.proto`,
//! its descriptor set (for server reflection) and the keyed partitioner that
//! both ends of the API share.
//!
//! Record batches are carried as `bytes::Bytes` in the storage crate's batch
//! format; nothing here interprets them.

/// Version 1 of the API (`package strand.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("strand.v1");

    /// The encoded `FileDescriptorSet` of `strand.proto`, for gRPC server
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/strand_descriptor.bin"));
}

pub mod partitioner;
