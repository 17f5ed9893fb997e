//! Rebuilds when a migration is added, since `sqlx::migrate!` embeds the directory.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
