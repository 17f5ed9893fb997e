//! The two backends' migrations stay in step: the same versions with the same names.

use std::path::Path;

fn listing(dir: &str) -> Vec<(i64, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
    let mut out: Vec<(i64, String)> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| {
            let stem = name.trim_end_matches(".sql");
            let (version, desc) = stem
                .split_once('_')
                .unwrap_or_else(|| panic!("{dir}/{name} is not VERSION_NAME.sql"));
            let version = version
                .parse()
                .unwrap_or_else(|_| panic!("{dir}/{name} does not start with a version number"));
            (version, desc.to_owned())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn sqlite_and_postgres_migrations_have_the_same_versions_and_names() {
    let sqlite = listing("sqlite");
    let postgres = listing("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres differ");
    let versions: Vec<i64> = sqlite.iter().map(|(v, _)| *v).collect();
    let expected: Vec<i64> = (1..=versions.len() as i64).collect();
    assert_eq!(versions, expected, "versions are numbered 1, 2, 3, ... without gaps");
}
