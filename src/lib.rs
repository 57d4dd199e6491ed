//! alipanfs: an Aliyundrive (alipan) drive as a local filesystem, through the Open platform API.
//!
//! Layers (data flows down): `cli` → `fs` (FUSE adapter + core: inodes, metadata cache, handles)
//! → `read` (prefetcher) / `write` (staging + upload queue) → `drive` (trait) → `api` (HTTP client).
//! `emulator` serves the Open API on 127.0.0.1 for tests, benchmarks and the demo.

pub mod api;
pub mod atomic_file;
pub mod cache;
pub mod cli;
pub mod control;
pub mod drive;
pub mod emulator;
pub mod error;
pub mod fault;
pub mod fs;
pub mod hashing;
pub mod logging;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod platform;
pub mod poll;
pub mod read;
pub mod redact;
pub mod sync;
pub mod timefmt;
pub mod transcode;
pub mod units;
pub mod webdav;
pub mod write;

pub use error::{Error, Result};
