//! The filesystem: `core` holds the semantics (inodes, listings, handles, local content),
//! `fuse` adapts it to fuser, `mount` puts it on a mount point.

pub mod core;
pub mod fuse;
pub mod inode;
pub mod local;
pub mod names;

pub use self::core::{Attr, FsConfig, FsCore};
