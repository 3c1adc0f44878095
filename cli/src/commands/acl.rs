//! `strand acl add|remove|list`: who may do what (Kafka's ACL model).

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use strand_client::proto::{AclBinding, AclFilter, AclOperation, AclPatternType, AclPermission, AclResourceType};

use super::target::Target;

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow (or, with --deny, deny) a principal an operation on a resource.
    Add(AclArgs),
    /// Remove the ACLs that match (omitted flags match anything).
    Remove(AclArgs),
    /// List the ACLs that match (omitted flags match anything).
    List(AclArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
}

#[derive(Debug, Args)]
pub struct AclArgs {
    /// `User:<name>` (a client certificate's common name), `User:*` for
    /// everyone, or `ANONYMOUS`.
    #[arg(long)]
    principal: Option<String>,
    /// The operation.
    #[arg(long, value_enum)]
    operation: Option<Operation>,
    /// A topic (with --prefixed: every topic starting with it; `*`: all).
    #[arg(long, conflicts_with_all = ["group", "cluster"])]
    topic: Option<String>,
    /// A consumer or share group (with --prefixed: every group starting
    /// with it; `*`: all).
    #[arg(long, conflicts_with = "cluster")]
    group: Option<String>,
    /// The cluster (creating topics, reassigning, ACLs, status).
    #[arg(long)]
    cluster: bool,
    /// The name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// Deny instead of allow (a deny wins over every allow).
    #[arg(long)]
    deny: bool,
}

impl AclArgs {
    fn resource(&self) -> (AclResourceType, String) {
        match (&self.topic, &self.group, self.cluster) {
            (Some(t), _, _) => (AclResourceType::Topic, t.clone()),
            (_, Some(g), _) => (AclResourceType::Group, g.clone()),
            (_, _, true) => (AclResourceType::Cluster, "cluster".into()),
            _ => (AclResourceType::Any, String::new()),
        }
    }

    fn operation(&self) -> AclOperation {
        match self.operation {
            None => AclOperation::Any,
            Some(Operation::All) => AclOperation::All,
            Some(Operation::Read) => AclOperation::Read,
            Some(Operation::Write) => AclOperation::Write,
            Some(Operation::Create) => AclOperation::Create,
            Some(Operation::Delete) => AclOperation::Delete,
            Some(Operation::Alter) => AclOperation::Alter,
            Some(Operation::Describe) => AclOperation::Describe,
        }
    }

    fn binding(&self) -> anyhow::Result<AclBinding> {
        let Some(principal) = self.principal.clone() else {
            anyhow::bail!("--principal is required (User:<name>, User:* or ANONYMOUS)");
        };
        let (kind, name) = self.resource();
        if kind == AclResourceType::Any {
            anyhow::bail!("name a resource: --topic T, --group G or --cluster");
        }
        if self.operation.is_none() {
            anyhow::bail!("--operation is required");
        }
        Ok(AclBinding {
            principal,
            resource_type: kind as i32,
            resource_name: name,
            pattern_type: self.pattern() as i32,
            operation: self.operation() as i32,
            permission: if self.deny {
                AclPermission::Deny
            } else {
                AclPermission::Allow
            } as i32,
        })
    }

    fn pattern(&self) -> AclPatternType {
        if self.prefixed {
            AclPatternType::Prefixed
        } else {
            AclPatternType::Literal
        }
    }

    fn filter(&self) -> AclFilter {
        let (kind, name) = self.resource();
        AclFilter {
            principal: self.principal.clone().unwrap_or_default(),
            resource_type: kind as i32,
            resource_name: name,
            // A name without --prefixed matches either kind of pattern.
            pattern_type: if self.prefixed {
                AclPatternType::Prefixed
            } else {
                AclPatternType::Any
            } as i32,
            operation: self.operation() as i32,
            permission: if self.deny {
                AclPermission::Deny
            } else {
                AclPermission::Any
            } as i32,
        }
    }
}

/// One line per binding: `ALLOW User:alice READ topic orders. (prefixed)`.
fn line(b: &AclBinding) -> String {
    let name = |s: &str| s.trim_start_matches("ACL_").to_string();
    let kind = AclResourceType::try_from(b.resource_type).map_or("?".into(), |k| {
        name(k.as_str_name())
            .trim_start_matches("RESOURCE_TYPE_")
            .to_lowercase()
    });
    let op = AclOperation::try_from(b.operation).map_or("?".into(), |o| {
        name(o.as_str_name()).trim_start_matches("OPERATION_").to_string()
    });
    let perm = AclPermission::try_from(b.permission).map_or("?".into(), |p| {
        name(p.as_str_name()).trim_start_matches("PERMISSION_").to_string()
    });
    let prefixed = if b.pattern_type == AclPatternType::Prefixed as i32 {
        " (prefixed)"
    } else {
        ""
    };
    format!("{perm} {} {op} {kind} {}{prefixed}", b.principal, b.resource_name)
}

pub async fn run(target: &Target, cmd: AclCommand) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    match cmd {
        AclCommand::Add(a) => {
            let b = a.binding()?;
            admin.create_acls(vec![b.clone()]).await?;
            println!("added: {}", line(&b));
        }
        AclCommand::Remove(a) => {
            if a.principal.is_none() && a.resource().0 == AclResourceType::Any && a.operation.is_none() {
                anyhow::bail!("refusing to remove every ACL: name a --principal, a resource or an --operation");
            }
            let removed = admin.delete_acls(a.filter()).await?;
            for b in &removed {
                println!("removed: {}", line(b));
            }
            if removed.is_empty() {
                println!("no ACL matched");
            }
        }
        AclCommand::List(a) => {
            for b in admin.describe_acls(a.filter()).await? {
                println!("{}", line(&b));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
