//! Where alipanfs keeps things by default: XDG folders, or systemd's when it runs as a service.

use std::path::PathBuf;

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(fallback))
}

/// `$XDG_STATE_HOME/alipanfs` (or `$STATE_DIRECTORY` under systemd).
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    xdg("XDG_STATE_HOME", ".local/state").join("alipanfs")
}

/// `$XDG_CACHE_HOME/alipanfs` (or `$CACHE_DIRECTORY` under systemd).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CACHE_DIRECTORY").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    xdg("XDG_CACHE_HOME", ".cache").join("alipanfs")
}

/// `$XDG_CONFIG_HOME/alipanfs/config.toml`.
pub fn default_config_file() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config")
        .join("alipanfs")
        .join("config.toml")
}
