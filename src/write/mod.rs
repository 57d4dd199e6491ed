//! The write path: staging files, the uploader, and the background upload queue.
//!
//! The fs writes into a local staging file (`staging`), and on release hands it to the
//! `UploadQueue` (`queue`), which uploads it with `upload_file` (`upload`) and retries until it
//! succeeds. The remote copy being replaced is removed only after the new one is complete and
//! verified (see `upload`'s module doc for the order and why it is safe). Every staged version
//! has a journal entry beside it, written when the staging file is created and made durable at
//! every FLUSH, so a restart uploads what was closed (`staging`, `Staging::recover`).
//!
//! # Locks (`crate::sync`)
//!
//! | level | lock | guards |
//! |---|---|---|
//! | 100 `JOURNAL_ENTRY` | `staging::JournalEntry`, one per staged file being journaled | the entry's read-modify-write and removal (its small fsyncs run under it; the data fdatasync runs before it) |
//! | 210 `WRITE_QUEUE` | `UploadQueue::slots` | each key's waiting/running job |
//! | 220 `WRITE_REPLACED` | `UploadQueue::replaced` | replaced file_id → successor (bounded, 4,096) |
//! | 230 `WRITE_COMPLETED` | `UploadQueue::completed` | landings the fs has not applied yet |
//! | 240 `WRITE_STREAM` | `WriteStream` state | a file uploading while written |
//! | 250 `WRITE_JOURNAL` | `staging::JOURNAL_LOCKS` | finds the entry locks; taken alone, briefly |
//! | 280 `WRITE_EVENTS` | `UploadQueue::events` | the subscribers' unbounded senders |
//! | 290 `WRITE_PROGRESS` | `JobProgress::last_error` | a job's last error |
//! | 900 `LEAF` | `JobProgress::sessions` | drive files an attempt created |
//!
//! None is held across a network call or a wait; only `JOURNAL_ENTRY` across an fsync.

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
