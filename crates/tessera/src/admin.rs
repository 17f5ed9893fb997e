//! `tessera account` and `tessera key`: tenants and their SigV4 access keys.

use clap::{Args, Subcommand};
use serde_json::json;
use tessera_core::{timefmt, AccountId};
use time::OffsetDateTime;

use crate::profile::{write_profile, ProfileArgs};
use crate::{Output, StoreArgs};

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account with an access key pair.
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// Create it even if another account has this name.
        #[arg(long)]
        allow_duplicate_name: bool,
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        profile: ProfileArgs,
        /// How to print: a table for people, or one JSON document for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// How to print: a table for people, or one JSON document for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
    },
    /// Delete an account and its access keys; refused while it issues or
    /// receives licenses, takes part in grants or has environments.
    Delete {
        /// The 12-digit account ID.
        account_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Create another access key pair for an account.
    Create(KeyCreate),
    /// Revoke an access key; requests signed with it are refused at once.
    Revoke {
        /// The access key ID (AKIA...).
        access_key_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List an account's access keys (IDs and status; never secrets).
    List {
        /// The 12-digit account ID.
        #[arg(long)]
        account: String,
        #[command(flatten)]
        store: StoreArgs,
        /// How to print: a table for people, or one JSON document for scripts.
        #[arg(short = 'o', long, value_enum, default_value_t)]
        output: Output,
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
    /// How to print: a table for people, or one JSON document for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: Output,
}

fn print_key(
    output: Output,
    account: &str,
    name: Option<&str>,
    akid: &str,
    secret: &str,
    profile: Option<&crate::profile::Written>,
) {
    match output {
        Output::Json => println!(
            "{}",
            json!({"AccountId": account, "AccessKeyId": akid, "SecretAccessKey": secret})
        ),
        Output::Table => {
            let mut t = crate::out::table(&["Field", "Value"]);
            t.add_row(vec!["AccountId", account]);
            if let Some(n) = name {
                t.add_row(vec!["Name", n]);
            }
            t.add_row(vec!["AccessKeyId", akid]);
            t.add_row(vec!["SecretAccessKey", secret]);
            println!("{t}");
            match profile {
                Some(w) => {
                    let p = &w.name;
                    if w.replaced {
                        println!("AWS CLI profile '{p}' already existed and now holds this key (the key it held before is no longer in it).");
                    }
                    println!("AWS CLI profile '{p}' written: aws --profile {p} license-manager list-licenses");
                }
                None => println!("The secret is shown only now. Add --aws-profile NAME to write an AWS CLI profile."),
            }
        }
    }
}

pub async fn account(cmd: AccountCommand) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Create {
            name,
            allow_duplicate_name,
            store,
            profile,
            output,
        } => {
            anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
            let store = store.open_or_create().await?;
            if !allow_duplicate_name {
                if let Some(same) = store.list_accounts().await?.iter().find(|a| a.name == name) {
                    anyhow::bail!(
                        "account {} is already named '{name}'; choose another name, or pass --allow-duplicate-name",
                        same.id
                    );
                }
            }
            let (acct, key) = store.create_account(&name, OffsetDateTime::now_utc()).await?;
            let written = write_profile(&profile, &key.access_key_id, &key.secret)?;
            print_key(
                output,
                acct.id.as_str(),
                Some(&name),
                &key.access_key_id,
                &key.secret,
                written.as_ref(),
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
                    let mut t = crate::out::table(&["AccountId", "Name", "CreatedAt"]);
                    for a in &accounts {
                        t.add_row(vec![a.id.to_string(), a.name.clone(), timefmt::format(a.created_at)]);
                    }
                    println!("{t}");
                }
            }
        }
        AccountCommand::Delete { account_id, store } => {
            let id = AccountId::parse(&account_id).map_err(|e| anyhow::anyhow!("account ID: {}", e.message))?;
            store.open().await?.delete_account(&id).await?;
            println!("deleted account {id} and its access keys");
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
                written.as_ref(),
            );
        }
        KeyCommand::Revoke { access_key_id, store } => {
            let store = store.open().await?;
            store
                .revoke_access_key(&access_key_id, OffsetDateTime::now_utc())
                .await?;
            println!("revoked {access_key_id}");
        }
        KeyCommand::List { account, store, output } => {
            let id = AccountId::parse(&account).map_err(|e| anyhow::anyhow!("--account: {}", e.message))?;
            let keys = store.open().await?.list_access_keys(&id).await?;
            let when = |t: Option<OffsetDateTime>| t.map(timefmt::format);
            match output {
                Output::Json => {
                    let v: Vec<_> = keys
                        .iter()
                        .map(|k| {
                            json!({"AccessKeyId": k.access_key_id, "Status": if k.active { "Active" } else { "Revoked" },
                                   "CreatedAt": timefmt::format(k.created_at), "RevokedAt": when(k.revoked_at)})
                        })
                        .collect();
                    crate::out::json(&v)?;
                }
                Output::Table => {
                    let mut t = crate::out::table(&["AccessKeyId", "Status", "CreatedAt", "RevokedAt"]);
                    for k in &keys {
                        t.add_row(vec![
                            k.access_key_id.clone(),
                            if k.active { "Active" } else { "Revoked" }.to_owned(),
                            timefmt::format(k.created_at),
                            when(k.revoked_at).unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
    }
    Ok(())
}
