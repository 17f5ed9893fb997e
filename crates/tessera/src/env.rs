//! `tessera env` and `tessera product-key`: the vendor side of BYOC.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum EnvCommand {}

#[derive(Subcommand)]
pub enum ProductKeyCommand {}

pub async fn run_env(cmd: EnvCommand) -> anyhow::Result<()> {
    match cmd {}
}

pub async fn run_product_key(cmd: ProductKeyCommand) -> anyhow::Result<()> {
    match cmd {}
}
