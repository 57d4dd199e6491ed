//! The write path: staging files, the uploader, and the background upload queue.
//!
//! The fs writes into a local staging file (`staging`), and on release hands it to the
//! `UploadQueue` (`queue`), which uploads it with `upload_file` (`upload`) and retries until it
//! succeeds. The remote copy being replaced is removed only after the new one is complete and
//! verified (see `upload`'s module doc for the order and why it is safe). Every staged version
//! has a journal entry beside it, written when the staging file is created and made durable at
//! every FLUSH, so a restart uploads what was closed (`staging`, `Staging::recover`).

pub mod local;
pub mod parts;
pub mod progress;
pub mod queue;
pub mod resume;
pub mod staging;
pub mod stream;
pub mod upload;

#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
pub(crate) mod testdrive;
#[cfg(test)]
mod upload_tests;

pub use progress::{JobProgress, Outcome};
pub use queue::{JobInfo, UploadEvent, UploadQueue};
pub use staging::{StagedFile, Staging};
pub use stream::{StreamTarget, Streams, WriteStream};
pub use upload::{upload_file, UploadConfig, UploadTarget};
