//! The `ward` command line: set-up, serving and administration. `main.rs` only parses
//! arguments and prints; the commands live here so tests can call them.

pub mod audit_cli;
pub mod certs;
pub mod clients;
pub mod demo;
mod files;
pub mod init;
pub mod launch;
pub mod users;
