//! The user calls of the `Admin` service: what the server keeps of each
//! password (the client derived it; the password is never sent).

use strand_proto::v1 as pb;
use strand_security::Principal;

use super::access;
use crate::admin::{Admin, MetadataRequest};
use crate::controller::acl::AclOperation;
use crate::controller::users::{Secret, StoredCredential};
use crate::error::Result;

/// Creates a user or changes its password (needs `alter` on the cluster).
pub(super) async fn upsert(admin: &Admin, who: &Principal, req: pb::UpsertUserRequest) -> Result<()> {
    access::cluster(admin.node(), who, AclOperation::Alter)?;
    admin
        .submit(MetadataRequest::UpsertUser {
            name: req.name,
            credential: StoredCredential {
                salt: Secret(req.salt.to_vec()),
                iterations: req.iterations,
                stored_key: Secret(req.stored_key.to_vec()),
                server_key: Secret(req.server_key.to_vec()),
            },
            token_key: Secret(strand_security::scram::new_key()),
        })
        .await
}

/// Deletes a user (needs `alter` on the cluster).
pub(super) async fn delete(admin: &Admin, who: &Principal, name: String) -> Result<()> {
    access::cluster(admin.node(), who, AclOperation::Alter)?;
    admin.submit(MetadataRequest::DeleteUser { name }).await
}

/// Every user's name (needs `describe` on the cluster).
pub(super) fn list(admin: &Admin, who: &Principal) -> Result<Vec<String>> {
    access::cluster(admin.node(), who, AclOperation::Describe)?;
    Ok(admin.node().with_metadata(|m| m.users.names()))
}
