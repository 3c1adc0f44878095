//! Idempotent delivery (on by default): the producer's id and epoch, the
//! numbering of each partition's batches, and how a partition recovers from
//! a sequence it cannot continue.
//!
//! A batch is numbered (stamped with id, epoch and base sequence) when it is
//! first sent and keeps those bytes across retries, so the leader that
//! stored it — or the next one — answers a retry with the stored offsets.
//! The broker accepts a batch only if it continues its partition's sequence,
//! so batches land in numbering order even with several in flight.
//!
//! A numbering run breaks when a batch's predecessor will never be stored
//! (it failed for good, or the partition forgot the producer after
//! `producer.id.expiration.ms`): the broker answers `OUT_OF_ORDER_SEQUENCE`
//! or `UNKNOWN_PRODUCER_ID`, both meaning "not written". The partition then
//! waits until nothing of it is in flight and every numbered batch left is
//! known to be unwritten, takes a newer epoch and numbers those batches
//! again from 0 (KIP-360). A batch whose outcome is unknown is never
//! renumbered: it is sent again as it was until the broker says what
//! became of it, so a renumbered batch can never be a second copy.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use strand_proto::v1::InitProducerIdRequest;
use strand_storage::ProducerInfo;

use crate::connection::with_timeout;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;

/// A producer id and epoch.
pub(crate) type Identity = (i64, i16);

/// How a sent batch is numbered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sequence {
    /// Producer id and epoch of the run.
    pub identity: Identity,
    /// Sequence of the batch's first record.
    pub base: i32,
}

/// Asks a broker for an id and epoch: a new one, or (with `current`) the
/// next epoch of the same id; `key` keeps the id across restarts.
///
/// # Errors
/// `PRODUCER_FENCED` when a newer incarnation with the same key exists; the
/// last failure when no broker answered within `timeout` per broker.
pub(crate) async fn init_producer_id(
    md: &Metadata,
    key: Option<&str>,
    current: Option<Identity>,
    timeout: Duration,
) -> Result<Identity> {
    let request = InitProducerIdRequest {
        producer_id_key: key.unwrap_or_default().to_string(),
        producer_id: current.map_or(0, |c| c.0),
        producer_epoch: current.map_or(0, |c| i32::from(c.1)),
    };
    md.with_any_broker(|addr| {
        let request = request.clone();
        async move {
            let mut c = md.conns().strand(&addr).await?;
            let r = with_timeout(|| format!("producer id request to {addr}"), timeout, async {
                Ok(c.init_producer_id(request).await?.into_inner())
            })
            .await?;
            let epoch = i16::try_from(r.producer_epoch)
                .map_err(|_| ClientError::invalid(format!("broker answered epoch {}", r.producer_epoch)))?;
            Ok((r.producer_id, epoch))
        }
    })
    .await
}

/// `bytes` (one batch) numbered `seq`, reusing the buffer when nothing else
/// holds it.
pub(crate) fn stamp(bytes: Bytes, seq: Sequence) -> Result<Bytes> {
    let mut buf = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    strand_storage::set_producer(
        &mut buf,
        ProducerInfo {
            producer_id: seq.identity.0,
            producer_epoch: seq.identity.1,
            base_sequence: seq.base,
        },
    )
    .map_err(|e| ClientError::invalid(format!("cannot number a batch: {e}")))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use strand_storage::{BatchBuilder, BatchRef, Compression, NewRecord};

    #[test]
    fn stamping_numbers_a_batch_and_keeps_it_valid() {
        let mut b = BatchBuilder::new(Compression::Snappy);
        b.push(&NewRecord {
            timestamp_ms: 1,
            key: None,
            value: Some(b"v"),
            headers: &[],
        });
        let bytes = Bytes::from(b.build().unwrap());
        let seq = Sequence {
            identity: (42, 3),
            base: 17,
        };
        let stamped = stamp(bytes.clone(), seq).unwrap();
        let view = BatchRef::validate(&stamped).expect("CRC recomputed");
        assert_eq!(
            view.producer(),
            Some(ProducerInfo {
                producer_id: 42,
                producer_epoch: 3,
                base_sequence: 17
            })
        );
        assert_eq!(
            view.records_section(),
            BatchRef::validate(&bytes).unwrap().records_section()
        );
    }
}
