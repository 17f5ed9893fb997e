//! `tessera agent`: the environment agent and the commands that talk to it.

use clap::Args;

#[derive(Args)]
pub struct AgentArgs {}

pub async fn run(_args: AgentArgs) -> anyhow::Result<()> {
    anyhow::bail!("the environment agent is not built yet")
}
