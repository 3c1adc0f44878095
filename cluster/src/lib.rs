//! Replication for Strand: one Raft group per partition whose log is the
//! storage log, plus the controller group for cluster metadata.
//!
//! This crate is intentionally empty until the multi-node cluster is built
//! (see `docs/ARCHITECTURE.md`, section Replication). Nothing here pretends
//! to replicate: a single broker today serves its partitions straight from
//! `strand-storage`.
