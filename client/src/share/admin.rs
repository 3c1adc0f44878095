//! Share-group administration on [`Admin`]: list and describe.

use std::collections::BTreeSet;

use crate::connection::Link as Channel;
use strand_proto::v1::share_groups_client::ShareGroupsClient;
use strand_proto::v1::{DescribeShareGroupRequest, ListShareGroupsRequest, ShareGroupDescription};

use crate::admin::Admin;
use crate::coordinator::CoordinatorClient;
use crate::error::Result;
use crate::offsets::OffsetSpec;

impl Admin {
    /// Every share group, asked of every broker (each knows the groups it
    /// coordinates). Brokers that do not answer are skipped, so the list
    /// may be partial while one is down.
    ///
    /// # Errors
    /// A failure of the metadata request.
    pub async fn list_share_groups(&self) -> Result<Vec<String>> {
        let meta = self.metadata().await?;
        let mut out = BTreeSet::new();
        for b in meta.brokers {
            let resp = async {
                let mut c = ShareGroupsClient::<Channel>::on(self.md.conns().channel(&b.addr).await?);
                Ok::<_, crate::ClientError>(c.list_share_groups(ListShareGroupsRequest {}).await?.into_inner())
            }
            .await;
            match resp {
                Ok(r) => out.extend(r.groups),
                Err(e) => tracing::warn!(broker = %b.addr, error = %e, "could not list the share groups of a broker"),
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Members, and per partition the share-partition start offset and the
    /// records in flight, acquired, available, delayed and archived.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`, or a failure reaching the coordinator.
    pub async fn describe_share_group(&self, group: &str) -> Result<ShareGroupDescription> {
        let req = DescribeShareGroupRequest { group: group.into() };
        let mut d = self
            .coordinator(group)
            .call_on(self.request_timeout(), |mut c: ShareGroupsClient<Channel>| {
                let req = req.clone();
                async move { Ok(c.describe_share_group(req).await?.into_inner()) }
            })
            .await?;
        // The coordinator knows the ends of the partitions it hosts; ask the
        // leaders of the others.
        for p in d.partitions.iter_mut().filter(|p| p.high_watermark == 0) {
            if let Ok(l) = self.list_offsets(&p.topic, p.partition, OffsetSpec::Latest).await {
                p.high_watermark = l.high_watermark;
            }
        }
        Ok(d)
    }
}
