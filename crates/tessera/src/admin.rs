//! `tessera account` and `tessera key`: tenants and their SigV4 access keys.

use clap::{Args, Subcommand};
use comfy_table::Table;
use serde_json::json;
use tessera_core::{timefmt, AccountId};
use time::OffsetDateTime;

use crate::profile::{write_profile, ProfileArgs};
use crate::{Output, StoreArgs};

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account with an access key pair.
    Create {
        /// A name for people; need not be unique.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        profile: ProfileArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create another access key pair for an account.
    Create(KeyCreate),
    /// Revoke an access key; requests signed with it are refused at once.
    Revoke {
        access_key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Args)]
pub struct KeyCreate {
    /// The 12-digit account ID.
    #[arg(long)]
    account: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    profile: ProfileArgs,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

fn print_key(output: Output, account: &str, name: Option<&str>, akid: &str, secret: &str, profile: Option<&str>) {
    match output {
        Output::Json => println!(
            "{}",
            json!({"AccountId": account, "AccessKeyId": akid, "SecretAccessKey": secret})
        ),
        Output::Table => {
            let mut t = Table::new();
            t.set_header(vec!["Field", "Value"]);
            t.add_row(vec!["AccountId", account]);
            if let Some(n) = name {
                t.add_row(vec!["Name", n]);
            }
            t.add_row(vec!["AccessKeyId", akid]);
            t.add_row(vec!["SecretAccessKey", secret]);
            println!("{t}");
            match profile {
                Some(p) => println!("AWS CLI profile '{p}' written: aws --profile {p} license-manager list-licenses"),
                None => println!("The secret is shown only now. Add --aws-profile NAME to write an AWS CLI profile."),
            }
        }
    }
}

pub async fn account(cmd: AccountCommand) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Create {
            name,
            store,
            profile,
            output,
        } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let store = store.open().await?;
            let (acct, key) = store.create_account(&name, OffsetDateTime::now_utc()).await?;
            let written = write_profile(&profile, &key.access_key_id, &key.secret)?;
            print_key(
                output,
                acct.id.as_str(),
                Some(&name),
                &key.access_key_id,
                &key.secret,
                written.as_deref(),
            );
        }
        AccountCommand::List { store, output } => {
            let store = store.open().await?;
            let accounts = store.list_accounts().await?;
            match output {
                Output::Json => {
                    let v: Vec<_> = accounts
                        .iter()
                        .map(|a| json!({"AccountId": a.id.as_str(), "Name": a.name, "CreatedAt": timefmt::format(a.created_at)}))
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                }
                Output::Table => {
                    let mut t = Table::new();
                    t.set_header(vec!["AccountId", "Name", "CreatedAt"]);
                    for a in &accounts {
                        t.add_row(vec![a.id.to_string(), a.name.clone(), timefmt::format(a.created_at)]);
                    }
                    println!("{t}");
                }
            }
        }
    }
    Ok(())
}

pub async fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create(KeyCreate {
            account,
            store,
            profile,
            output,
        }) => {
            let id = AccountId::parse(&account).map_err(|e| anyhow::anyhow!("--account: {}", e.message))?;
            let store = store.open().await?;
            let key = store.create_access_key(&id, OffsetDateTime::now_utc()).await?;
            let written = write_profile(&profile, &key.access_key_id, &key.secret)?;
            print_key(
                output,
                id.as_str(),
                None,
                &key.access_key_id,
                &key.secret,
                written.as_deref(),
            );
        }
        KeyCommand::Revoke { access_key_id, store } => {
            let store = store.open().await?;
            store
                .revoke_access_key(&access_key_id, OffsetDateTime::now_utc())
                .await?;
            println!("revoked {access_key_id}");
        }
    }
    Ok(())
}
