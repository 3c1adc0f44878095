//! The ACL and quota calls of the `Admin` service: protobuf ↔
//! `controller::acl` and `controller::quota`, and the metadata changes that
//! add and remove entries.

use strand_proto::v1 as pb;
use strand_security::Principal;

use super::access;
use crate::admin::{Admin, MetadataRequest};
use crate::controller::acl::{AclBinding, AclFilter, AclOperation, PatternType, Permission, ResourceType};
use crate::controller::quota::QuotaLimits;
use crate::error::{BrokerError, Result};

fn invalid(what: &str, value: i32) -> BrokerError {
    BrokerError::InvalidRequest {
        reason: format!("unknown ACL {what} {value}"),
    }
}

fn resource_type(v: i32) -> Result<Option<ResourceType>> {
    Ok(
        match pb::AclResourceType::try_from(v).map_err(|_| invalid("resource type", v))? {
            pb::AclResourceType::Any => None,
            pb::AclResourceType::Topic => Some(ResourceType::Topic),
            pb::AclResourceType::Group => Some(ResourceType::Group),
            pb::AclResourceType::Cluster => Some(ResourceType::Cluster),
        },
    )
}

fn pattern_type(v: i32) -> Result<Option<PatternType>> {
    Ok(
        match pb::AclPatternType::try_from(v).map_err(|_| invalid("pattern type", v))? {
            pb::AclPatternType::Any => None,
            pb::AclPatternType::Literal => Some(PatternType::Literal),
            pb::AclPatternType::Prefixed => Some(PatternType::Prefixed),
        },
    )
}

fn operation(v: i32) -> Result<Option<AclOperation>> {
    Ok(
        match pb::AclOperation::try_from(v).map_err(|_| invalid("operation", v))? {
            pb::AclOperation::Any => None,
            pb::AclOperation::All => Some(AclOperation::All),
            pb::AclOperation::Read => Some(AclOperation::Read),
            pb::AclOperation::Write => Some(AclOperation::Write),
            pb::AclOperation::Create => Some(AclOperation::Create),
            pb::AclOperation::Delete => Some(AclOperation::Delete),
            pb::AclOperation::Alter => Some(AclOperation::Alter),
            pb::AclOperation::Describe => Some(AclOperation::Describe),
        },
    )
}

fn permission(v: i32) -> Result<Option<Permission>> {
    Ok(
        match pb::AclPermission::try_from(v).map_err(|_| invalid("permission", v))? {
            pb::AclPermission::Any => None,
            pb::AclPermission::Allow => Some(Permission::Allow),
            pb::AclPermission::Deny => Some(Permission::Deny),
        },
    )
}

fn required<T>(v: Option<T>, what: &str) -> Result<T> {
    v.ok_or_else(|| BrokerError::InvalidRequest {
        reason: format!("an ACL needs a {what}"),
    })
}

fn binding(b: &pb::AclBinding) -> Result<AclBinding> {
    Ok(AclBinding {
        principal: b.principal.clone(),
        resource_type: required(resource_type(b.resource_type)?, "resource type")?,
        resource_name: b.resource_name.clone(),
        // Unset is literal, as in Kafka.
        pattern_type: pattern_type(b.pattern_type)?.unwrap_or(PatternType::Literal),
        operation: required(operation(b.operation)?, "operation")?,
        permission: required(permission(b.permission)?, "permission")?,
    })
}

fn filter(f: Option<&pb::AclFilter>) -> Result<AclFilter> {
    let Some(f) = f else { return Ok(AclFilter::default()) };
    let text = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(AclFilter {
        principal: text(&f.principal),
        resource_type: resource_type(f.resource_type)?,
        resource_name: text(&f.resource_name),
        pattern_type: pattern_type(f.pattern_type)?,
        operation: operation(f.operation)?,
        permission: permission(f.permission)?,
    })
}

/// A binding on the wire.
pub fn to_proto(b: &AclBinding) -> pb::AclBinding {
    pb::AclBinding {
        principal: b.principal.clone(),
        resource_type: match b.resource_type {
            ResourceType::Topic => pb::AclResourceType::Topic,
            ResourceType::Group => pb::AclResourceType::Group,
            ResourceType::Cluster => pb::AclResourceType::Cluster,
        } as i32,
        resource_name: b.resource_name.clone(),
        pattern_type: match b.pattern_type {
            PatternType::Literal => pb::AclPatternType::Literal,
            PatternType::Prefixed => pb::AclPatternType::Prefixed,
        } as i32,
        operation: match b.operation {
            AclOperation::All => pb::AclOperation::All,
            AclOperation::Read => pb::AclOperation::Read,
            AclOperation::Write => pb::AclOperation::Write,
            AclOperation::Create => pb::AclOperation::Create,
            AclOperation::Delete => pb::AclOperation::Delete,
            AclOperation::Alter => pb::AclOperation::Alter,
            AclOperation::Describe => pb::AclOperation::Describe,
        } as i32,
        permission: match b.permission {
            Permission::Allow => pb::AclPermission::Allow,
            Permission::Deny => pb::AclPermission::Deny,
        } as i32,
    }
}

/// Adds the request's bindings (needs `alter` on the cluster).
pub(super) async fn create(admin: &Admin, who: &Principal, req: pb::CreateAclsRequest) -> Result<()> {
    access::cluster(admin.node(), who, AclOperation::Alter)?;
    let bindings = req.acls.iter().map(binding).collect::<Result<Vec<_>>>()?;
    admin.submit(MetadataRequest::AddAcls { bindings }).await
}

/// Removes what the filter matches and answers what that was (needs
/// `alter` on the cluster).
pub(super) async fn delete(admin: &Admin, who: &Principal, req: pb::DeleteAclsRequest) -> Result<Vec<pb::AclBinding>> {
    access::cluster(admin.node(), who, AclOperation::Alter)?;
    let filter = filter(req.filter.as_ref())?;
    let before = admin.node().metadata().acls.list(&filter);
    admin.submit(MetadataRequest::RemoveAcls { filter }).await?;
    Ok(before.iter().map(to_proto).collect())
}

/// The bindings the filter matches (needs `describe` on the cluster).
pub(super) fn describe(admin: &Admin, who: &Principal, req: &pb::DescribeAclsRequest) -> Result<Vec<pb::AclBinding>> {
    access::cluster(admin.node(), who, AclOperation::Describe)?;
    let filter = filter(req.filter.as_ref())?;
    Ok(admin
        .node()
        .metadata()
        .acls
        .list(&filter)
        .iter()
        .map(to_proto)
        .collect())
}

/// Sets an entity's quota (needs `alter` on the cluster).
pub(super) async fn alter_quota(admin: &Admin, who: &Principal, req: pb::AlterQuotaRequest) -> Result<()> {
    access::cluster(admin.node(), who, AclOperation::Alter)?;
    let q = req.quota.ok_or_else(|| BrokerError::InvalidRequest {
        reason: "AlterQuota needs a quota".into(),
    })?;
    let rate = |v: u64| (v > 0).then_some(v);
    let limits = QuotaLimits {
        produce_bytes_per_sec: rate(q.produce_bytes_per_sec),
        fetch_bytes_per_sec: rate(q.fetch_bytes_per_sec),
        requests_per_sec: rate(q.requests_per_sec),
    };
    admin
        .submit(MetadataRequest::SetQuota {
            entity: q.entity,
            limits,
        })
        .await
}

/// Every quota (needs `describe` on the cluster).
pub(super) fn describe_quotas(admin: &Admin, who: &Principal) -> Result<Vec<pb::QuotaEntry>> {
    access::cluster(admin.node(), who, AclOperation::Describe)?;
    Ok(admin
        .node()
        .metadata()
        .quotas
        .list()
        .into_iter()
        .map(|(entity, l)| pb::QuotaEntry {
            entity,
            produce_bytes_per_sec: l.produce_bytes_per_sec.unwrap_or(0),
            fetch_bytes_per_sec: l.fetch_bytes_per_sec.unwrap_or(0),
            requests_per_sec: l.requests_per_sec.unwrap_or(0),
        })
        .collect())
}
