//! ACLs and quotas through [`Admin`]: who may do what, and how fast (Kafka's model; see the
//! `AclBinding` message of the protobuf API). Adding and removing need
//! `alter` on the cluster, listing `describe` on the cluster (or a super
//! user).
//!
//! ```no_run
//! # async fn f(admin: strand_client::Admin) -> strand_client::Result<()> {
//! use strand_client::proto::{AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType};
//! // alice may read every topic whose name starts with "orders.".
//! admin
//!     .create_acls(vec![AclBinding {
//!         principal: "User:alice".into(),
//!         resource_type: AclResourceType::Topic as i32,
//!         resource_name: "orders.".into(),
//!         pattern_type: AclPatternType::Prefixed as i32,
//!         operation: AclOperation::Read as i32,
//!         permission: AclPermission::Allow as i32,
//!     }])
//!     .await?;
//! let alices = admin.describe_acls(AclFilter { principal: "User:alice".into(), ..Default::default() }).await?;
//! # Ok(()) }
//! ```

use strand_proto::v1::{
    AclBinding, AclFilter, AlterQuotaRequest, CreateAclsRequest, DeleteAclsRequest, DeleteUserRequest,
    DescribeAclsRequest, DescribeQuotasRequest, ListUsersRequest, QuotaEntry, UpsertUserRequest,
};
use strand_security::scram::{DEFAULT_ITERATIONS, ScramCredential};

use crate::admin::Admin;
use crate::error::Result;

impl Admin {
    /// Adds ACLs (adding one that exists changes nothing).
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED` without `alter` on the cluster;
    /// `INVALID_REQUEST` for a malformed binding (the message names it).
    pub async fn create_acls(&self, acls: Vec<AclBinding>) -> Result<()> {
        self.admin_call("create ACLs", |mut c| {
            let acls = acls.clone();
            async move {
                c.create_acls(CreateAclsRequest { acls }).await?;
                Ok(())
            }
        })
        .await
    }

    /// Removes every ACL `filter` matches; returns them.
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED` without `alter` on the cluster.
    pub async fn delete_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>> {
        self.admin_call("delete ACLs", |mut c| {
            let filter = filter.clone();
            async move {
                Ok(c.delete_acls(DeleteAclsRequest { filter: Some(filter) })
                    .await?
                    .into_inner()
                    .deleted)
            }
        })
        .await
    }

    /// The ACLs `filter` matches.
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED` without `describe` on the cluster.
    pub async fn describe_acls(&self, filter: AclFilter) -> Result<Vec<AclBinding>> {
        self.admin_call("describe ACLs", |mut c| {
            let filter = filter.clone();
            async move {
                Ok(c.describe_acls(DescribeAclsRequest { filter: Some(filter) })
                    .await?
                    .into_inner()
                    .acls)
            }
        })
        .await
    }

    /// Sets a quota: `entity` is `User:<name>`, `ANONYMOUS` or `<default>`;
    /// rates of 0 are unlimited (all 0 removes the entity's quota). A
    /// principal over a rate gets its answers delayed, not refused.
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED` without `alter` on the cluster;
    /// `INVALID_REQUEST` for an entity that is no principal.
    pub async fn alter_quota(&self, quota: QuotaEntry) -> Result<()> {
        self.admin_call("alter quota", |mut c| {
            let quota = quota.clone();
            async move {
                c.alter_quota(AlterQuotaRequest { quota: Some(quota) }).await?;
                Ok(())
            }
        })
        .await
    }

    /// Every quota.
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED` without `describe` on the cluster.
    pub async fn describe_quotas(&self) -> Result<Vec<QuotaEntry>> {
        self.admin_call("describe quotas", |mut c| async move {
            Ok(c.describe_quotas(DescribeQuotasRequest {}).await?.into_inner().quotas)
        })
        .await
    }

    /// Creates user `name` with `password`, or changes its password. The
    /// client derives the stored keys (SCRAM-SHA-256, random salt, 4,096
    /// iterations): the password is not sent.
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED` without `alter` on the cluster;
    /// `INVALID_REQUEST` for a name that is not letters, digits and -_.@.
    pub async fn upsert_user(&self, name: &str, password: &str) -> Result<()> {
        if password.is_empty() {
            return Err(crate::ClientError::invalid("an empty password"));
        }
        let c = ScramCredential::new(password, DEFAULT_ITERATIONS);
        let req = UpsertUserRequest {
            name: name.to_string(),
            salt: c.salt.into(),
            iterations: c.iterations,
            stored_key: c.stored_key.to_vec().into(),
            server_key: c.server_key.to_vec().into(),
        };
        self.admin_call("upsert user", |mut cl| {
            let req = req.clone();
            async move {
                cl.upsert_user(req).await?;
                Ok(())
            }
        })
        .await
    }

    /// Deletes user `name`; tokens it holds stop working at once.
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED`; `INVALID_REQUEST` for an unknown user.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        self.admin_call("delete user", |mut c| async move {
            c.delete_user(DeleteUserRequest { name: name.to_string() }).await?;
            Ok(())
        })
        .await
    }

    /// Every user's name.
    ///
    /// # Errors
    /// `AUTHORIZATION_FAILED` without `describe` on the cluster.
    pub async fn list_users(&self) -> Result<Vec<String>> {
        self.admin_call("list users", |mut c| async move {
            Ok(c.list_users(ListUsersRequest {}).await?.into_inner().names)
        })
        .await
    }
}
