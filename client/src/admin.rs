//! Topic administration and cluster inspection.
//!
//! Admin requests go to any broker (the broker forwards what only the
//! controller can do); if one does not answer, the next known broker is
//! tried. Offset lookups go to the partition's leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strand_proto::v1::admin_client::AdminClient;
use strand_proto::v1::{
    ClusterStatusRequest, ClusterStatusResponse, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest,
    DescribeTopicRequest, ListTopicsRequest, MetadataRequest, MetadataResponse, ReassignPartitionRequest,
    TopicDescription, TopicSummary,
};

use crate::connection::Link as Channel;

use crate::connection::{ConnectionConfig, with_timeout};
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::offsets::{ListedOffsets, OffsetSpec, list_offsets};
use crate::retry::Backoff;
use crate::security::Security;

/// An administrative client. Cheap to clone; safe to share.
///
/// ```no_run
/// # async fn f() -> strand_client::Result<()> {
/// use std::collections::BTreeMap;
/// use strand_client::Admin;
///
/// let admin = Admin::connect("127.0.0.1:9292").await?;
/// let configs = BTreeMap::from([("retention.ms".to_owned(), "3600000".to_owned())]);
/// admin.create_topic("orders", 6, 1, configs).await?;
/// for t in admin.list_topics().await? {
///     println!("{} ({} partitions)", t.name, t.partitions);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Admin {
    pub(crate) md: Arc<Metadata>,
    pub(crate) backoff: Backoff,
}

impl Admin {
    /// Connects to the first broker of `bootstrap` (`"host:port[,...]"`)
    /// that answers, with default timeouts (10 s to connect, 30 s per request).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an empty list;
    /// [`ClientError::Connect`] if no broker answers.
    pub async fn connect(bootstrap: impl Into<String>) -> Result<Admin> {
        Self::connect_with(bootstrap, Security::default()).await
    }

    /// As [`Admin::connect`], with TLS (and a client certificate) as
    /// `security` says.
    ///
    /// # Errors
    /// As [`Admin::connect`].
    pub async fn connect_with(bootstrap: impl Into<String>, security: Security) -> Result<Admin> {
        let config = ConnectionConfig {
            security,
            ..ConnectionConfig::default()
        };
        let md = Metadata::connect(&bootstrap.into(), config).await?;
        Ok(Admin {
            md,
            backoff: Backoff::default(),
        })
    }

    /// Creates a topic and returns its description.
    ///
    /// # Errors
    /// The broker's reason: `TOPIC_ALREADY_EXISTS`, `INVALID_TOPIC`,
    /// `INVALID_CONFIG`, `INVALID_REQUEST`, ...
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicDescription> {
        // One id for every attempt: a retry after an attempt whose answer
        // was lost (or timed out while a large topic was being set up) is
        // answered with the topic that attempt created, not
        // TOPIC_ALREADY_EXISTS.
        let request = CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            replication_factor,
            configs: configs.into_iter().collect(),
            topic_id: new_topic_id(),
        };
        let created = self
            .admin_call("create topic", |mut c| {
                let request = request.clone();
                async move { Ok(c.create_topic(request).await?.into_inner()) }
            })
            .await?;
        created.topic.ok_or_else(|| ClientError::Protocol {
            message: format!("create topic {name:?} answered without a description"),
        })
    }

    /// Grows a topic to `partitions` partitions. Keyed records map to
    /// partitions by count, so a key's later records may land elsewhere.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`; `INVALID_REQUEST` if the count does not grow.
    pub async fn create_partitions(&self, name: &str, partitions: u32) -> Result<TopicDescription> {
        let request = CreatePartitionsRequest {
            name: name.to_owned(),
            partitions,
        };
        let grown = self
            .admin_call("create partitions", |mut c| {
                let request = request.clone();
                async move { Ok(c.create_partitions(request).await?.into_inner()) }
            })
            .await?;
        grown.topic.ok_or_else(|| ClientError::Protocol {
            message: format!("create partitions of {name:?} answered without a description"),
        })
    }

    /// Moves a partition's replicas to `replicas` (preferred leader first):
    /// new replicas copy the log and start voting once caught up, then the
    /// old ones are removed. Returns once the move is recorded;
    /// [`Admin::describe_topic`] shows `moving_to` until it is done.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, `INVALID_REQUEST` (a broker
    /// that is not in the cluster, or a repeated one).
    pub async fn reassign_partition(&self, topic: &str, partition: u32, replicas: &[u64]) -> Result<()> {
        let request = ReassignPartitionRequest {
            topic: topic.to_owned(),
            partition,
            replicas: replicas.to_vec(),
            finish: false,
        };
        self.admin_call("reassign partition", |mut c| {
            let request = request.clone();
            async move {
                c.reassign_partition(request).await?;
                Ok(())
            }
        })
        .await
    }

    /// Deletes a topic and its data.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` if it does not exist.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.admin_call("delete topic", |mut c| async move {
            c.delete_topic(DeleteTopicRequest { name: name.to_owned() }).await?;
            Ok(())
        })
        .await
    }

    /// Every topic with its partition count and replication factor.
    ///
    /// # Errors
    /// A transport or broker failure.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>> {
        self.admin_call("list topics", |mut c| async move {
            Ok(c.list_topics(ListTopicsRequest {}).await?.into_inner().topics)
        })
        .await
    }

    /// A topic's configuration and per-partition state (leader, replicas,
    /// offsets, size).
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` if it does not exist.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        self.admin_call("describe topic", |mut c| async move {
            Ok(c.describe_topic(DescribeTopicRequest { name: name.to_owned() })
                .await?
                .into_inner())
        })
        .await
    }

    /// Brokers (up or not), the controller, and every partition's leader and
    /// lagging replicas, as the broker asked gathers them from all brokers.
    ///
    /// # Errors
    /// A transport or broker failure.
    pub async fn cluster_status(&self) -> Result<ClusterStatusResponse> {
        self.admin_call("cluster status", |mut c| async move {
            Ok(c.cluster_status(ClusterStatusRequest {}).await?.into_inner())
        })
        .await
    }

    /// The cluster's brokers and every topic's partitions and leaders.
    ///
    /// # Errors
    /// A transport or broker failure.
    pub async fn metadata(&self) -> Result<MetadataResponse> {
        let timeout = self.request_timeout();
        self.md
            .with_any_broker(|addr| async move {
                let mut c = self.md.conns().strand(&addr).await?;
                with_timeout(|| format!("metadata request to {addr}"), timeout, async {
                    Ok(c.metadata(MetadataRequest::default()).await?.into_inner())
                })
                .await
            })
            .await
    }

    /// Looks up an offset of a partition on its leader.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION`, or a failure that persisted for
    /// the request timeout.
    pub async fn list_offsets(&self, topic: &str, partition: u32, spec: OffsetSpec) -> Result<ListedOffsets> {
        list_offsets(&self.md, topic, partition, spec, self.backoff, self.request_timeout()).await
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.md.conns().config().request_timeout
    }

    /// Runs an `Admin` RPC on the first broker that answers, within the
    /// request timeout.
    pub(crate) async fn admin_call<T, F, Fut>(&self, what: &'static str, call: F) -> Result<T>
    where
        F: Fn(AdminClient<Channel>) -> Fut + Clone,
        Fut: Future<Output = Result<T>>,
    {
        let timeout = self.request_timeout();
        self.md
            .with_any_broker(|addr| {
                let conns = self.md.conns();
                let call = call.clone();
                async move {
                    let client = conns.admin(&addr).await?;
                    with_timeout(|| format!("{what} on {addr}"), timeout, call(client)).await
                }
            })
            .await
    }
}

/// A random (version 4) UUID in 8-4-4-4-12 hex, for a new topic.
fn new_topic_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}
