//! Access control lists, as Kafka's: (principal, operation, resource
//! pattern, allow or deny), replicated in the controller's metadata.
//!
//! Deciding ([`AclSet::authorizes`]):
//! - a matching `deny` wins over any `allow`;
//! - without a matching `allow` the answer is no;
//! - `all` covers every operation; an allowed `read`, `write`, `delete` or
//!   `alter` also allows `describe` (as in Kafka);
//! - a literal pattern names one resource (`*`: every one); a prefixed
//!   pattern every resource whose name starts with it;
//! - the principal `User:*` matches every principal.
//!
//! Pure data: no I/O. Super users and brokers are the authorizer's business
//! (`security::authorizer`), not this set's.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// What a request does to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclOperation {
    /// Every operation.
    All,
    /// Fetch records; join, consume and commit as a group.
    Read,
    /// Produce records.
    Write,
    /// Create topics.
    Create,
    /// Delete topics, groups.
    Delete,
    /// Change configs, partitions, replicas, ACLs.
    Alter,
    /// See that it exists and how it is.
    Describe,
}

/// The kind of thing an ACL protects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceType {
    /// A topic.
    Topic,
    /// A consumer group or a share group (one name space, as in Kafka).
    Group,
    /// The cluster itself (one resource, named `cluster`).
    Cluster,
}

/// How an ACL's resource name matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    /// The exact name (`*`: every name).
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Allows the operation.
    Allow,
    /// Denies it, whatever allows it.
    Deny,
}

/// The name of the one cluster resource.
pub const CLUSTER_RESOURCE: &str = "cluster";

/// One ACL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `User:<name>`, `User:*` or `Broker:<id>`.
    pub principal: String,
    /// The resource kind.
    pub resource_type: ResourceType,
    /// The name or prefix.
    pub resource_name: String,
    /// Literal or prefixed.
    pub pattern_type: PatternType,
    /// The operation.
    pub operation: AclOperation,
    /// Allow or deny.
    pub permission: Permission,
}

impl fmt::Display for AclBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {} {:?} on {:?} {}{}",
            self.permission,
            self.principal,
            self.operation,
            self.resource_type,
            self.resource_name,
            if self.pattern_type == PatternType::Prefixed {
                "*"
            } else {
                ""
            }
        )
    }
}

impl AclBinding {
    /// Why this binding cannot be stored, if it cannot.
    pub fn problem(&self) -> Option<String> {
        let principal_ok = self.principal == "User:*"
            || strand_security::Principal::parse(&self.principal)
                .is_some_and(|p| p != strand_security::Principal::Anonymous)
            || self.principal == "ANONYMOUS";
        if !principal_ok {
            return Some(format!(
                "principal {:?} is not User:<name>, User:*, Broker:<id> or ANONYMOUS",
                self.principal
            ));
        }
        if self.resource_name.is_empty() {
            return Some("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_RESOURCE {
            return Some(format!("the cluster resource is named {CLUSTER_RESOURCE:?}"));
        }
        None
    }

    fn matches_principal(&self, principal: &str) -> bool {
        self.principal == "User:*" || self.principal == principal
    }

    fn matches_resource(&self, kind: ResourceType, name: &str) -> bool {
        self.resource_type == kind
            && match self.pattern_type {
                PatternType::Literal => self.resource_name == "*" || self.resource_name == name,
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn covers(&self, op: AclOperation) -> bool {
        self.operation == AclOperation::All
            || self.operation == op
            || (op == AclOperation::Describe
                && self.permission == Permission::Allow
                && matches!(
                    self.operation,
                    AclOperation::Read | AclOperation::Write | AclOperation::Delete | AclOperation::Alter
                ))
    }
}

/// A filter over bindings (for listing and removing): `None` matches
/// anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    /// The principal, exactly.
    pub principal: Option<String>,
    /// The resource kind.
    pub resource_type: Option<ResourceType>,
    /// The resource name or prefix, exactly as stored.
    pub resource_name: Option<String>,
    /// The pattern type.
    pub pattern_type: Option<PatternType>,
    /// The operation.
    pub operation: Option<AclOperation>,
    /// Allow or deny.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Whether `b` passes.
    pub fn matches(&self, b: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.resource_type.is_none_or(|t| t == b.resource_type)
            && self.resource_name.as_ref().is_none_or(|n| *n == b.resource_name)
            && self.pattern_type.is_none_or(|t| t == b.pattern_type)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// Every ACL of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclSet {
    bindings: BTreeSet<AclBinding>,
}

impl AclSet {
    /// Adds bindings; returns whether any was new.
    pub fn add(&mut self, bindings: &[AclBinding]) -> bool {
        let mut changed = false;
        for b in bindings {
            changed |= self.bindings.insert(b.clone());
        }
        changed
    }

    /// Removes the bindings `filter` matches; returns whether any was.
    pub fn remove(&mut self, filter: &AclFilter) -> bool {
        let before = self.bindings.len();
        self.bindings.retain(|b| !filter.matches(b));
        self.bindings.len() != before
    }

    /// The bindings `filter` matches.
    pub fn list(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.bindings.iter().filter(|b| filter.matches(b)).cloned().collect()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Whether `principal` (its text form) may do `op` on resource `name`
    /// of kind `kind`.
    pub fn authorizes(&self, principal: &str, op: AclOperation, kind: ResourceType, name: &str) -> bool {
        let mut allowed = false;
        for b in self
            .bindings
            .iter()
            .filter(|b| b.matches_principal(principal) && b.matches_resource(kind, name) && b.covers(op))
        {
            match b.permission {
                Permission::Deny => return false,
                Permission::Allow => allowed = true,
            }
        }
        allowed
    }

    /// Whether `principal` is allowed `op` on at least one resource of kind
    /// `kind` (an idempotent producer's id is granted to anyone who may
    /// write somewhere, as in Kafka).
    pub fn allows_any(&self, principal: &str, op: AclOperation, kind: ResourceType) -> bool {
        self.bindings.iter().any(|b| {
            b.permission == Permission::Allow
                && b.matches_principal(principal)
                && b.resource_type == kind
                && b.covers(op)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        principal: &str,
        op: AclOperation,
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type: kind,
            resource_name: name.into(),
            pattern_type: pattern,
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn deny_wins_prefixes_match_and_reads_imply_describe() {
        use AclOperation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let mut s = AclSet::default();
        s.add(&[
            acl("User:alice", Read, Topic, "orders.", Prefixed, Allow),
            acl("User:alice", All, Topic, "orders.secret", Literal, Deny),
            acl("User:*", Describe, Group, "*", Literal, Allow),
            acl("User:bob", Write, Topic, "logs", Literal, Allow),
        ]);
        assert!(s.authorizes("User:alice", Read, Topic, "orders.eu"));
        assert!(
            s.authorizes("User:alice", Describe, Topic, "orders.eu"),
            "read implies describe"
        );
        assert!(!s.authorizes("User:alice", Write, Topic, "orders.eu"));
        assert!(!s.authorizes("User:alice", Read, Topic, "orders.secret"), "deny wins");
        assert!(!s.authorizes("User:alice", Read, Topic, "order"), "not the prefix");
        assert!(!s.authorizes("User:bob", Read, Topic, "orders.eu"));
        assert!(
            s.authorizes("User:bob", Describe, Group, "g"),
            "User:* matches everyone"
        );
        assert!(!s.authorizes("User:bob", Write, Topic, "logs2"), "literal is exact");
        assert!(s.allows_any("User:bob", Write, Topic));
        assert!(!s.allows_any("User:alice", Write, Topic));
        let removed = s.remove(&AclFilter {
            principal: Some("User:alice".into()),
            ..AclFilter::default()
        });
        assert!(removed);
        assert_eq!(s.len(), 2);
        assert!(!s.authorizes("User:alice", Read, Topic, "orders.eu"));
    }

    #[test]
    fn malformed_bindings_are_refused() {
        use AclOperation::*;
        let ok = acl(
            "User:a",
            Read,
            ResourceType::Topic,
            "t",
            PatternType::Literal,
            Permission::Allow,
        );
        assert_eq!(ok.problem(), None);
        for bad in [
            AclBinding {
                principal: "alice".into(),
                ..ok.clone()
            },
            AclBinding {
                resource_name: String::new(),
                ..ok.clone()
            },
            AclBinding {
                resource_type: ResourceType::Cluster,
                resource_name: "x".into(),
                ..ok.clone()
            },
        ] {
            assert!(bad.problem().is_some(), "{bad}");
        }
    }
}
