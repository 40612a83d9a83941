//! `cva user add|list`: bootstrap the first admin from the command line.

use std::io::BufRead;

use anyhow::{bail, Context};
use cva_access::password::Password;
use cva_access::{AccessStore, NewUser, Role, Username};
use cva_ledger::Ledger;

use crate::cli::UserCommand;

pub async fn run(ledger: &Ledger, cmd: UserCommand) -> anyhow::Result<()> {
    let store = AccessStore::new(ledger.clone());
    match cmd {
        UserCommand::Add {
            username,
            roles,
            programmes,
            password_stdin,
        } => {
            if !password_stdin {
                bail!("pass --password-stdin and write the password on standard input");
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("cannot read the password from standard input")?;
            let password = Password::parse(line.trim_end_matches(['\n', '\r']))?;
            let roles = roles
                .iter()
                .map(|r| Role::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let user = store
                .create_user(
                    NewUser {
                        username: Username::parse(&username)?,
                        password,
                        roles,
                        programmes,
                    },
                    &super::audit::cli_context(),
                )
                .await?;
            println!(
                "user {} created (id {}, roles {})",
                user.username.as_str(),
                user.id.0,
                user.roles
                    .iter()
                    .map(Role::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        UserCommand::List => {
            for u in store.users().await? {
                println!(
                    "{}\t{}\t{}\t{}{}",
                    u.id.0,
                    u.username.as_str(),
                    u.roles
                        .iter()
                        .map(Role::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    if u.programmes.is_empty() {
                        "all programmes".to_owned()
                    } else {
                        u.programmes.join(",")
                    },
                    if u.disabled { "\tdisabled" } else { "" }
                );
            }
        }
    }
    Ok(())
}
