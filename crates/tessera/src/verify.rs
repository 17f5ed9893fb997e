//! `tessera token verify`: checks a signed token offline against a JWKS.

use anyhow::Context;
use clap::Subcommand;
use tessera_token::Jwks;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Verify a token's signature and expiry; print its claims.
    Verify {
        /// A JWKS file, or the server's URL for it (http://HOST/.well-known/jwks.json).
        #[arg(long)]
        jwks: String,
        /// The compact JWS, as returned in SignedToken.
        token: String,
        #[command(flatten)]
        out: crate::out::OutputArg,
    },
}

pub async fn load_jwks(src: &str) -> anyhow::Result<Jwks> {
    let text = if src.starts_with("http://") || src.starts_with("https://") {
        reqwest::get(src)
            .await
            .with_context(|| format!("cannot fetch {src}"))?
            .error_for_status()?
            .text()
            .await?
    } else {
        std::fs::read_to_string(src).with_context(|| format!("cannot read {src}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{src} is not a JWKS document"))
}

pub async fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Verify { jwks, token, out } => {
            let set = load_jwks(&jwks).await?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let claims = tessera_token::verify(token.trim(), &set, now).context("the token is not valid")?;
            if out.output == crate::Output::Json {
                return crate::out::json(&claims);
            }
            let value = serde_json::to_value(&claims)?;
            let rows: Vec<(String, String)> = value
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            println!(
                "{}",
                crate::out::fields(rows.iter().map(|(k, v)| (k.as_str(), v.clone())))
            );
            println!("The token's signature verifies and it has not expired.");
            Ok(())
        }
    }
}
