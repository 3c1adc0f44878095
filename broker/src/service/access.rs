//! The ACL checks every service makes before doing anything: who asks (the
//! principal of the request's connection) and whether an ACL lets them.
//! With authorization off (`security.authorization`), every check passes
//! without taking a lock.

use std::collections::BTreeSet;

use strand_security::Principal;

use crate::controller::acl::{AclOperation, ResourceType};
use crate::error::Result;
use crate::node::Node;

pub(crate) use crate::security::principal as caller;

/// Refuses unless `who` may do `op` on every topic of `topics`.
pub(crate) fn topics<'a>(
    node: &Node,
    who: &Principal,
    op: AclOperation,
    topics: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    if !node.security().authorization_enabled() {
        return Ok(());
    }
    let distinct: BTreeSet<&str> = topics.into_iter().collect();
    for t in distinct {
        node.authorize(who, op, ResourceType::Topic, t)?;
    }
    Ok(())
}

/// Refuses unless `who` may do `op` on group `group`.
pub(crate) fn group(node: &Node, who: &Principal, op: AclOperation, group: &str) -> Result<()> {
    node.authorize(who, op, ResourceType::Group, group)
}

/// Refuses unless `who` may do `op` on the cluster.
pub(crate) fn cluster(node: &Node, who: &Principal, op: AclOperation) -> Result<()> {
    node.authorize(who, op, ResourceType::Cluster, crate::controller::acl::CLUSTER_RESOURCE)
}
