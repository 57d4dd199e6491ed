//! Changes made elsewhere (the phone app, the web, another computer): found by polling the
//! drive, since the API has no change callback. `detect` finds what changed at the fewest calls,
//! `poller` applies it to the mount every `--poll-interval` (and on `alipanfs refresh`),
//! `kernel` makes the kernel's caches follow, `hook` runs `--on-change`, `saved` keeps the
//! detector's position across mounts.

pub mod detect;
pub mod hook;
pub mod kernel;
pub mod poller;
pub mod saved;

pub use detect::{Detector, FeedKind, Found, Position};
pub use kernel::Kernel;
pub use poller::{PollConfig, Poller};
