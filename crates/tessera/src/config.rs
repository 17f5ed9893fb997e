//! `--config FILE`: settings from a TOML file, beneath flags and environment
//! variables and above defaults. Each key is a flag's long name
//! (`listen = "0.0.0.0:7070"`, `max-connections = 5000`); a key that names no
//! flag is an error. The file's values are applied as if given as flags, for
//! every flag not already set on the command line or in the environment, so
//! that clap parses and checks them exactly as it does flags.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory};

use crate::out::{self, Output};
use crate::Cli;

/// Arguments that are not settings: never read from a file, never shown.
const NOT_SETTINGS: &[&str] = &["help", "version", "config", "output"];

/// Settings whose values are never shown.
const SECRETS: &[&str] = &["secret_access_key"];

/// The command line with the config file's settings added.
pub struct Layered {
    pub argv: Vec<OsString>,
    /// IDs of the arguments whose values came from the file.
    pub from_file: BTreeSet<String>,
}

/// Adds the settings of the `--config` file, if the command has one, to `argv`.
pub fn layer(argv: Vec<OsString>) -> anyhow::Result<Layered> {
    let unchanged = |argv| Layered {
        argv,
        from_file: BTreeSet::new(),
    };
    let mut root = Cli::command();
    root.build();
    // Leniently: a required flag may come from the file. A command line clap
    // refuses is reported by the real parse.
    let Ok(matches) = lenient(root.clone()).try_get_matches_from(&argv) else {
        return Ok(unchanged(argv));
    };
    let (cmd, m) = leaf(&root, &matches);
    let Some(file) = m.try_get_one::<PathBuf>("config").ok().flatten().cloned() else {
        return Ok(unchanged(argv));
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("cannot read the config file {}", file.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("the config file {} is not valid TOML", file.display()))?;
    let settings: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .collect();
    let unknown: Vec<&str> = table
        .keys()
        .map(String::as_str)
        .filter(|k| !settings.iter().any(|a| a.get_long() == Some(*k)))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = settings.iter().filter_map(|a| a.get_long()).collect();
        bail!(
            "the config file {} has unknown settings: {}; the settings of `{}` are: {}",
            file.display(),
            unknown.join(", "),
            cmd.get_bin_name().unwrap_or(cmd.get_name()),
            known.join(", ")
        );
    }
    let mut argv = argv;
    let mut from_file = BTreeSet::new();
    for arg in settings {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        let Some(value) = table.get(long) else { continue };
        if matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) if flag => {
                if *b {
                    argv.push(format!("--{long}").into());
                    from_file.insert(id.to_owned());
                }
                continue;
            }
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "the config file {} sets {long} to a {}; it takes a string, a number or true/false",
                file.display(),
                other.type_str()
            ),
        };
        if flag {
            bail!(
                "the config file {} sets {long} to {text:?}; it takes true or false",
                file.display()
            );
        }
        argv.push(format!("--{long}={text}").into());
        from_file.insert(id.to_owned());
    }
    Ok(Layered { argv, from_file })
}

/// `cmd` parsing without refusing what is missing, at every level.
fn lenient(cmd: Command) -> Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    let mut cmd = cmd.ignore_errors(true);
    for name in names {
        cmd = cmd.mut_subcommand(name, lenient);
    }
    cmd
}

/// The subcommand that runs, and its matches.
fn leaf<'a>(root: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    let (mut cmd, mut m) = (root, matches);
    while let Some((name, sub)) = m.subcommand() {
        match cmd.find_subcommand(name) {
            Some(c) => {
                cmd = c;
                m = sub;
            }
            None => break,
        }
    }
    (cmd, m)
}

/// One effective setting, for `config show`.
struct Shown {
    setting: String,
    value: Option<String>,
    /// flag, env, file, default or unset.
    source: &'static str,
    env: Option<String>,
}

/// How a surface spells its JSON keys: the server's CLI as AWS does
/// (`AccessKeyId`), the agent's as its HTTP API does (`installId`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Casing {
    Pascal,
    Camel,
}

/// Prints the effective settings of the command being run, with where each came from.
pub fn show(layered: &Layered, output: Output, casing: Casing) -> anyhow::Result<()> {
    let mut root = Cli::command();
    root.build();
    let matches = root.clone().try_get_matches_from(&layered.argv)?;
    let (cmd, m) = leaf(&root, &matches);
    let mut rows = Vec::new();
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        let source = if layered.from_file.contains(id) {
            "file"
        } else {
            match m.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "env",
                Some(ValueSource::DefaultValue) => "default",
                _ => "unset",
            }
        };
        let value = m.get_raw(id).map(|vals| {
            vals.map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        });
        let value = match value {
            Some(_) if SECRETS.contains(&id) => Some("(set; not shown)".to_owned()),
            Some(v) if id == "database_url" => Some(tessera_store::PgStore::redact_url(&v)),
            v => v,
        };
        rows.push(Shown {
            setting: long.to_owned(),
            value,
            source,
            env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
        });
    }
    if output == Output::Json {
        let key = |pascal: &'static str| match casing {
            Casing::Pascal => pascal.to_owned(),
            Casing::Camel => pascal[..1].to_lowercase() + &pascal[1..],
        };
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    key("Setting"): r.setting, key("Value"): r.value,
                    key("Source"): r.source, key("EnvironmentVariable"): r.env,
                })
            })
            .collect();
        return out::json(&doc);
    }
    let mut t = out::table(&["Setting", "Value", "Source", "Environment variable"]);
    for r in rows {
        t.add_row(vec![
            r.setting,
            r.value.unwrap_or_else(|| "-".into()),
            r.source.to_owned(),
            r.env.unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{t}");
    Ok(())
}
