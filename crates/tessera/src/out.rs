//! How every command prints: one table style, fitted to the terminal's width
//! (long values wrap), or one JSON document for scripts (`-o json`).

use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables for people.
    #[default]
    Table,
    /// One JSON document, for scripts.
    Json,
}

/// `-o, --output table|json`, on every command that prints data.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct OutputArg {
    /// How to print: a table for people, or one JSON document for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
}

/// A table in the one style, with `header`, fitted to the terminal.
pub fn table<S: ToString>(header: &[S]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(ToString::to_string).collect::<Vec<_>>());
    t
}

/// A two-column table of names and values.
pub fn fields<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> Table {
    let mut t = table(&["Field", "Value"]);
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    t
}

/// Prints `v` as indented JSON.
pub fn json<T: serde::Serialize + ?Sized>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
