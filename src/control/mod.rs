//! The control socket of a running mount: `alipanfs status` and `alipanfs sync` talk to the
//! daemon over a Unix socket in its runtime directory, and `alipanfs set` changes its limits.
//!
//! - `proto`  — the request and response types (one JSON line each way; sync streams lines);
//! - `paths`  — where sockets live and how a client finds the one of a mount point;
//! - `server` — the daemon side (peer credentials checked, bad requests answered, not fatal);
//! - `client` — the commands: discovery, the status table, sync's wait and exit code, set;
//! - `loglevel` — the daemon's log filter, replaceable while it runs.

pub mod client;
pub mod loglevel;
pub mod paths;
pub mod proto;
pub mod server;
