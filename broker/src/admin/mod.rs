//! Cluster administration: changes to the metadata (topics, partitions,
//! replica moves, brokers joining) and cluster-wide views (describe,
//! status).
//!
//! - [`request`]: a change as a [`MetadataRequest`] and the pure planning
//!   that turns it into a controller command;
//! - [`submit`]: the one route, forward, propose and wait path every change
//!   takes;
//! - [`topics`]: topic operations and views;
//! - [`brokers`]: brokers joining, and registering their data directories;
//! - [`reassign`]: the partition leader's side of moving replicas;
//! - [`status`]: cluster status merged from every broker's report;
//! - [`term_floor`]: term floors for replicas that lost their term.

mod brokers;
mod producer_ids;
pub mod reassign;
pub mod request;
pub mod status;
mod submit;
pub mod term_floor;
pub mod topics;

use std::sync::Arc;

pub use request::MetadataRequest;

use crate::node::Node;

/// Admin operations of one broker.
#[derive(Clone, Debug)]
pub struct Admin {
    node: Arc<Node>,
}

impl Admin {
    /// Admin operations over `node`.
    pub fn new(node: Arc<Node>) -> Self {
        Admin { node }
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }
}
