//! Brokers as the cluster records them: a broker joining with an empty data
//! directory, and every broker registering the data directory it runs on
//! (its incarnation), which is how the cluster tells a restarted broker
//! from one whose disk was replaced.

use strand_cluster::NodeId;

use super::{Admin, MetadataRequest};
use crate::error::Result;

impl Admin {
    /// Admits a broker with an empty data directory: records it in the
    /// metadata and makes it a learner of the controller group.
    pub async fn admit_broker(&self, id: NodeId, addr: String) -> Result<()> {
        self.submit(MetadataRequest::AddBroker { id, addr }).await
    }

    /// Registers this broker's data directory unless the applied metadata
    /// already has it. The node hosts partition replicas only once it is
    /// (see `node::replicas`).
    pub async fn register_data_dir(&self) -> Result<()> {
        let node = &self.node;
        if node.is_registered() {
            return Ok(());
        }
        self.submit(MetadataRequest::RegisterBroker {
            id: node.id(),
            incarnation: node.incarnation().to_string(),
        })
        .await?;
        tracing::info!(node = %node.id(), incarnation = %node.incarnation(), "registered this data directory");
        Ok(())
    }
}
