//! The Strand broker: serves produce, fetch, subscribe, offsets, metadata,
//! topic administration and consumer groups over gRPC, on top of
//! `strand-cluster` (Raft) and `strand-storage` (segment logs). The `strand`
//! binary (crate `strand-cli`) starts one with [`run`].
//!
//! Layers, each depending only on those below it:
//!
//! ```text
//! server      Broker: owns the layers, serves them, runs background tasks
//! service     gRPC: protobuf ↔ domain, nothing else
//! data_path   admin   groups   metrics      (domain: what a request does)
//! node        identity, replication loop, metadata, hosted replicas
//! security    TLS, principals, the checks peer requests make
//! partition   controller   topic            (one replica; pure metadata)
//! strand-cluster → strand-storage
//! ```
//!
//! Every partition, and the cluster metadata (the controller), is a Raft
//! group run by `strand-cluster`; a broker started without `--peers` is a
//! cluster of one.

pub mod admin;
pub mod blocking;
pub mod config;
pub mod controller;
pub mod data_path;
pub mod error;
pub mod groups;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod security;
pub mod server;
pub mod service;
pub mod topic;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use server::{Broker, RunningBroker, run};
