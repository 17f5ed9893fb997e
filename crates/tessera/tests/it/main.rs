//! Integration tests: a real server on a random port over a real SQLite file,
//! driven through SigV4-signed HTTP.

mod helpers;

mod auth;
mod consumption;
mod grants;
mod licenses;
