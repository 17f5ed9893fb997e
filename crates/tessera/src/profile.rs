//! Writes an AWS CLI profile (credentials plus `endpoint_url`) for an access key.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args, Clone, Debug, Default)]
pub struct ProfileArgs {
    /// Also write this AWS CLI profile (in AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE,
    /// by default ~/.aws/credentials and ~/.aws/config).
    #[arg(long)]
    pub aws_profile: Option<String>,
    /// The server URL to put in the profile.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    pub endpoint_url: String,
    /// The region to put in the profile (any region works).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
}

fn aws_file(env: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let home =
        std::env::var_os("HOME").context("HOME is not set; set AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE")?;
    Ok(PathBuf::from(home).join(".aws").join(name))
}

/// Replaces (or appends) one `[section]` of an INI file, keeping the others.
fn upsert_section(text: &str, section: &str, body: &[(&str, &str)]) -> String {
    let header = format!("[{section}]");
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            skipping = trimmed == header;
        }
        if !skipping {
            out.push(line.to_owned());
        }
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    if !out.is_empty() {
        out.push(String::new());
    }
    out.push(header);
    for (k, v) in body {
        out.push(format!("{k} = {v}"));
    }
    out.join("\n") + "\n"
}

/// Writes `section` into the INI file at `path`; true when it replaced one already there.
fn write_section(path: &PathBuf, section: &str, body: &[(&str, &str)]) -> anyhow::Result<bool> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let header = format!("[{section}]");
    let replaced = old.lines().any(|l| l.trim() == header);
    std::fs::write(path, upsert_section(&old, section, body))
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(replaced)
}

/// A profile written for an access key.
pub struct Written {
    pub name: String,
    /// The profile existed and now holds the new key.
    pub replaced: bool,
}

/// Writes the profile if one was asked for.
pub fn write_profile(args: &ProfileArgs, akid: &str, secret: &str) -> anyhow::Result<Option<Written>> {
    let Some(name) = &args.aws_profile else {
        return Ok(None);
    };
    anyhow::ensure!(
        !name.is_empty() && !name.contains(['[', ']', ' ']),
        "--aws-profile '{name}' is not a valid profile name"
    );
    let replaced = write_section(
        &aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?,
        name,
        &[("aws_access_key_id", akid), ("aws_secret_access_key", secret)],
    )?;
    let section = if name == "default" {
        name.clone()
    } else {
        format!("profile {name}")
    };
    write_section(
        &aws_file("AWS_CONFIG_FILE", "config")?,
        &section,
        &[("region", &args.region), ("endpoint_url", &args.endpoint_url)],
    )?;
    Ok(Some(Written {
        name: name.clone(),
        replaced,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let old = "[a]\nx = 1\n\n[b]\ny = 2\n";
        let new = upsert_section(old, "a", &[("x", "9")]);
        assert_eq!(new, "[b]\ny = 2\n\n[a]\nx = 9\n");
        assert_eq!(upsert_section("", "c", &[("k", "v")]), "[c]\nk = v\n");
    }
}
