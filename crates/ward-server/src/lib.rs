//! Ward's HTTP layer: the axum application, the request pipeline and the TLS listener.
//!
//! Only this crate (and the binary) know about HTTP. Handlers are short lists of calls into
//! `ward-auth`, `ward-fhir` and `ward-store`.

// Request paths handle client-controlled values: no panicking shortcuts outside tests (SEC-1).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod accounts;
pub mod app;
pub mod audit;
mod audit_api;
pub mod auth;
mod authorize;
mod bundle;
pub mod capability;
pub mod clock;
pub mod config;
mod conn;
pub mod discovery;
pub mod error;
mod fhir;
pub mod framing;
mod jwks_fetch;
pub mod middleware;
mod oauth;
pub mod oauth_people;
mod pages;
pub mod ratelimit;
mod reconcile;
pub mod request_id;
mod response;
mod search;
pub mod serve;
mod session;
mod signin;
pub mod state;
pub mod tls;
pub mod trusted_issuers;
pub mod writes;

pub use config::Config;

/// Sets `key` on a JSON object. Every caller builds an object; on anything else this does
/// nothing (where `value[key] = ...` would panic).
pub(crate) fn set_field(target: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if let Some(object) = target.as_object_mut() {
        object.insert(key.to_owned(), value);
    }
}
pub use serve::{RunningServer, StartError, start};
