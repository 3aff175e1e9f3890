//! Ward's HTTP layer: the axum application, the request pipeline and the TLS listener.
//!
//! Only this crate (and the binary) know about HTTP. Handlers are short lists of calls into
//! `ward-auth`, `ward-fhir` and `ward-store`.

pub mod app;
pub mod audit;
mod audit_api;
pub mod auth;
mod bundle;
pub mod capability;
pub mod config;
mod conn;
pub mod error;
mod fhir;
pub mod framing;
pub mod middleware;
mod oauth;
pub mod ratelimit;
pub mod request_id;
mod response;
mod search;
pub mod serve;
pub mod state;
pub mod tls;

pub use config::Config;
pub use serve::{RunningServer, StartError, start};
