//! The Open API client: the real `crate::drive::Drive` over HTTP (reqwest).
//!
//! One file per concept:
//! - `config`  — `ClientConfig`, rate limits and retry policy, with the real service's defaults;
//! - `token`   — the on-disk token store (atomic, 0600) and JWT `sub` decoding;
//! - `auth`    — access-token lifetime, single-flight refresh, rotation persisted before use;
//! - `limiter` — client-side token buckets per endpoint class;
//! - `retry`   — the one retry policy: backoff with jitter, budgets, per-layer attempt counts;
//! - `errors`  — error bodies (JSON, OSS XML, HTML, empty) → `crate::error::Error`;
//! - `wire`    — tolerant serde types of the wire format and their conversion to domain types;
//! - `http`    — one API call: limiter, bearer token, retries, token replay, logging;
//! - `stats`   — per-endpoint call, wait, 429 and error counters for `alipanfs status`;
//! - `data`    — the data plane: ranged downloads and part uploads on signed URLs;
//! - `login`   — the QR sign-in flows of `alipanfs login`;
//! - `received` — bytes received per file, for `status`;
//! - `bwlimit` — the download and upload bandwidth limits, and the bytes-on-the-wire counter;
//! - `client`  — `Client`, tying it together and implementing `Drive` (its file-tree and upload
//!   endpoints in `client/files` and `client/upload`).

mod auth;
mod bufpool;
pub mod bwlimit;
mod changes;
mod client;
mod config;
mod data;
mod errors;
mod http;
mod limiter;
pub mod login;
mod received;
pub mod retry;
mod stats;
mod token;
pub mod wire;

pub use client::Client;
pub use config::{ClientConfig, RateLimits, RetryPolicy};
pub use data::oss_expires;
pub use stats::{ApiStats, EndpointStats};
pub use token::{jwt_sub, store_refresh_token, unix_now, TokenStatus, TokenStore};
