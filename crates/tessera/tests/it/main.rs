//! Integration tests: a real server on a random port over a real SQLite file,
//! driven through SigV4-signed HTTP.

mod helpers;

mod auth;
mod bench;
mod consumption;
mod environments;
mod grants;
mod licenses;
