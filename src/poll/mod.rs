//! Changes made elsewhere (the phone app, the web, another computer): found by polling the
//! drive, since the API has no change callback. `detect` finds what changed at the fewest calls.

pub mod detect;

pub use detect::{Detector, FeedKind, Found};
