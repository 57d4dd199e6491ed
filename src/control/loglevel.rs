//! The log level of the running daemon, changed by `alipanfs set MOUNTPOINT log-level=debug`.
//! `logging::init` installs the filter behind a reload handle and registers it here.

use std::sync::OnceLock;

type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static RELOAD: OnceLock<Reload> = OnceLock::new();
static CURRENT: crate::sync::Mutex<String> =
    crate::sync::Mutex::new(crate::sync::Level::LEAF, "log_level", String::new());

/// Registers how to replace the filter, and the level in force.
pub fn install(level: &str, reload: Reload) {
    *CURRENT.lock() = level.to_string();
    let _ = RELOAD.set(reload);
}

/// The level (or filter) in force, as last set.
pub fn current() -> String {
    CURRENT.lock().clone()
}

/// Replaces the filter: a level (error, warn, info, debug, trace) or a tracing filter.
pub fn set(level: &str) -> Result<(), String> {
    let reload = RELOAD
        .get()
        .ok_or_else(|| "this daemon's logging cannot be changed".to_string())?;
    reload(level)?;
    *CURRENT.lock() = level.to_string();
    Ok(())
}
