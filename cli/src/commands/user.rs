//! `strand user create|delete|list`: users who log in with a password.

use std::io::BufRead;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::target::Target;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or change its password (read from stdin, one line).
    Create(CreateArgs),
    /// Delete a user: its logins end at once.
    Delete {
        /// The user.
        name: String,
    },
    /// List users.
    List,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The user (letters, digits and -_.@).
    name: String,
}

pub async fn run(target: &Target, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let admin = target.admin().await?;
    match cmd {
        UserCommand::Create(a) => {
            let mut password = String::new();
            std::io::stdin().lock().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!(
                    "no password on stdin (e.g. `printf %s \"$PW\" | strand user create {}`)",
                    a.name
                );
            }
            admin.upsert_user(&a.name, password).await?;
            println!("user {} set (principal User:{})", a.name, a.name);
        }
        UserCommand::Delete { name } => {
            admin.delete_user(&name).await?;
            println!("user {name} deleted");
        }
        UserCommand::List => {
            for n in admin.list_users().await? {
                println!("{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
