//! The agent over real HTTP on random ports, over real data directories.

mod activation;
mod auth;
mod bucket;
mod concurrency;
mod expiry;
mod helpers;
mod restart;
mod server;
mod trial;
mod wipe;
