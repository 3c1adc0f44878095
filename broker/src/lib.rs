//! The Strand broker: serves produce, fetch, subscribe, offsets, metadata
//! and topic administration over gRPC, on top of `strand-storage`.
//!
//! - [`server::run`] serves a bound listener until a shutdown future
//!   completes; [`server::RunningBroker`] does the same on a background task
//!   (tests bind `127.0.0.1:0`).
//! - [`state::BrokerState`] owns topics and partitions;
//!   [`partition::Partition`] owns one log, its high watermark and its
//!   group-commit flusher.
//! - [`group::GroupCoordinator`] runs consumer groups whose offsets live in
//!   the replicated `__consumer_offsets` topic.
//! - [`service`] holds the gRPC services; [`error::BrokerError`] maps every
//!   failure to a stable wire reason.
//!
//! Every partition, and the cluster metadata (the controller), is a Raft
//! group run by `strand-cluster`; a broker started without `--peers` is a
//! cluster of one.

pub mod config;
pub mod controller;
pub mod error;
pub mod group;
pub mod metrics;
pub mod partition;
pub mod reassign;
pub mod registry;
pub mod server;
pub mod service;
pub mod state;
pub mod topic;

pub use config::BrokerConfig;
pub use error::BrokerError;
pub use server::{RunningBroker, run};
