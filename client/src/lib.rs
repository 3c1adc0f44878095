//! Rust client for Strand, a distributed commit log with Kafka's model
//! (topics, partitions, offsets) served over gRPC.
//!
//! - [`Producer`] batches records per partition (linger, size, optional
//!   snappy compression), partitions keyed records exactly as Kafka's default
//!   partitioner does ([`murmur2`]) and keyless ones sticky, sends to each
//!   partition's leader in the background and retries retriable failures
//!   without reordering a partition. [`Producer::send`] returns a
//!   [`DeliveryFuture`] for the record's offset.
//! - [`Consumer`] reads assigned partitions from a position with long-polling
//!   fetches, validating every batch's CRC and handing out keys and values as
//!   zero-copy [`bytes::Bytes`] slices of the fetched buffer.
//! - [`Admin`] creates, lists, describes and deletes topics and looks up
//!   offsets.
//!
//! Every failure is a [`ClientError`] with a stable [`ClientError::reason`]:
//! the broker's reason name (`UNKNOWN_TOPIC`, `OFFSET_OUT_OF_RANGE`,
//! `RECORD_TOO_LARGE`, ...) when the broker reported it.
//!
//! All clients take a bootstrap list `"host:port[,host:port...]"`, try each
//! address in order until one answers, then talk to partition leaders
//! directly, refreshing metadata when a leader moves.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use strand_client::{Admin, Consumer, OffsetReset, Producer, ProducerRecord};
//!
//! # async fn example() -> strand_client::Result<()> {
//! let admin = Admin::connect("127.0.0.1:9292").await?;
//! admin.create_topic("greetings", 3, 1, BTreeMap::new()).await?;
//!
//! let producer = Producer::builder("127.0.0.1:9292").build().await?;
//! let mut deliveries = Vec::new();
//! for i in 0..10 {
//!     let record = ProducerRecord::new("greetings", format!("hello {i}")).key(format!("user-{i}"));
//!     deliveries.push(producer.send(record).await?);
//! }
//! for d in deliveries {
//!     let meta = d.await?;
//!     println!("stored at {}/{} offset {:?}", meta.topic, meta.partition, meta.offset);
//! }
//! producer.close().await?;
//!
//! let mut consumer = Consumer::builder("127.0.0.1:9292")
//!     .auto_offset_reset(OffsetReset::Earliest)
//!     .build()
//!     .await?;
//! consumer.assign_all("greetings").await?;
//! let mut seen = 0;
//! while seen < 10 {
//!     for r in consumer.poll().await? {
//!         println!("{}/{}@{}: {:?}", r.topic, r.partition, r.offset, r.value);
//!         seen += 1;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Consumer groups: build the consumer with [`ConsumerBuilder::group`] and
//! call [`Consumer::subscribe`]; the group's coordinator splits the
//! partitions between members, positions start at committed offsets, and
//! [`Consumer::commit`] (or auto-commit) records progress — committing after
//! processing gives at-least-once processing. [`DeadLetterQueue`] retries a
//! failing record with backoff and then sets it aside in `<topic>.dlq`.
//!
//! Share groups (queues): [`ShareConsumer`] members of one group share the
//! records of the same partitions, each record handed to one member and
//! acknowledged one by one, with redelivery after a lock timeout, a
//! delivery limit that ends in `<topic>.dlq`, and delayed delivery
//! ([`ProducerRecord::deliver_at`]).
//!
//! Not there yet: the idempotent producer (a retry after a lost answer can
//! duplicate a batch), transactions, TLS.
#![deny(missing_docs)]

mod acl_admin;
mod admin;
mod connection;
mod consumer;
mod coordinator;
pub mod dlq;
mod error;
mod group_admin;
mod metadata;
mod offsets;
mod producer;
pub mod rebalance;
mod retry;
mod security;
mod share;

pub use admin::Admin;
pub use consumer::{Consumer, ConsumerBuilder, ConsumerRecord, Offset, OffsetReset, RebalanceEvent, RebalanceListener};
pub use dlq::{DeadLetterQueue, Outcome, RetryPolicy};
pub use error::{ClientError, REASON_METADATA_KEY, Result};
pub use group_admin::ResetTo;
pub use offsets::{ListedOffsets, OffsetSpec};
pub use producer::{
    Acks, DeliveryFuture, Producer, ProducerBuilder, ProducerRecord, RecordMetadata, murmur2, partition_for_key,
};
pub use security::Security;
pub use share::{AcknowledgeType, AcknowledgementFailure, ShareConsumer, ShareConsumerBuilder, ShareRecord};
/// The generated gRPC types, as returned by [`Admin`] (e.g.
/// [`proto::TopicDescription`]) and used in [`ClientError::code`].
pub use strand_proto::v1 as proto;
/// Batch compression codecs (from the storage format).
pub use strand_storage::Compression;

#[cfg(test)]
mod tests {
    use super::*;

    /// Handles can be shared across tasks and their futures spawned.
    #[allow(dead_code, clippy::let_underscore_future)]
    fn futures_are_send(p: &Producer, c: &mut Consumer, a: &Admin) {
        fn send<T: Send>(_: &T) {}
        fn shared<T: Send + Sync>() {}
        shared::<Producer>();
        shared::<Admin>();
        shared::<ClientError>();
        send(&p.send(ProducerRecord::new("t", "v")));
        send(&p.flush());
        send(&p.close());
        send(&a.list_topics());
        send(&c.assign("t", &[0]));
        send(&c.poll());
        send(&c.stream());
    }

    #[test]
    fn handles_are_send() {
        fn send<T: Send>() {}
        send::<Consumer>();
        send::<DeliveryFuture>();
    }
}
