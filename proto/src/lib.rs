//! Strand's gRPC API: the generated tonic/prost code for `proto/strand.proto`.
//!
//! Record batches are carried as `bytes::Bytes` in the storage crate's batch
//! format; nothing here interprets them.

/// Version 1 of the API (`package strand.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("strand.v1");
}
