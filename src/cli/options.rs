//! Mount options, each declared once in `mount_options!` below: one line of help, its clap
//! attributes (command line and environment) and its serde attributes (config file and `-o`);
//! the merge of the sources (`MountOptions::or`) is generated from the same list. Precedence:
//! command line > environment > `-o` > config file > default (`resolve` holds the defaults).
//! Switches (booleans) are declared `switch NAME;` and so take the same words everywhere:
//! `--x`, `--x=on|off|true|false|yes|no`, `--no-x`, `-o x`, `-o x=off`, `x = false` in the file.

mod dirs;
mod o_list;
mod switches;
#[cfg(test)]
mod tests;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::drive::DriveChoice;
use crate::error::{Error, Result};
use crate::fs::{LivpMode, OrderBy, OrderDirection};

pub use dirs::{cache_dir, default_config_file, state_dir};
pub use switches::{expand_negations, long_options, prepare_argv};
pub use values::{parse_octal, parse_size, parse_size_or_off, parse_switch};

pub const DEFAULT_API_URL: &str = "https://openapi.alipan.com";
pub const DEFAULT_TOKEN_URL: &str = "https://api.nn.ci/alist/ali_open/token";
/// alist's internal upload host (reference 5.6), reachable from Alibaba Cloud's Beijing network.
pub const DEFAULT_INTERNAL_UPLOAD_URL: &str =
    "http://ccp-bj29-bj-1592982087.oss-cn-beijing-internal.aliyuncs.com";

/// Whether reads of fully cached files bypass the daemon (kernel passthrough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Passthrough {
    /// Where the kernel (6.9+) and privileges (root) allow it.
    #[default]
    Auto,
    Off,
}

/// Declares `MountOptions` from a list of `NAME: TYPE;` (a value option) and `switch NAME;` (a
/// boolean), each with its doc comment and attributes, and derives `MountOptions::or` from it.
macro_rules! mount_options {
    (@fields [$($done:tt)*] $(#[$a:meta])* switch $f:ident; $($rest:tt)*) => {
        mount_options!(@fields [$($done)*
            $(#[$a])*
            #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "on",
                  value_name = "on|off", value_parser = values::parse_switch)]
            #[serde(deserialize_with = "values::de_switch")]
            $f: bool,
        ] $($rest)*);
    };
    (@fields [$($done:tt)*] $(#[$a:meta])* $f:ident : $ty:ty; $($rest:tt)*) => {
        mount_options!(@fields [$($done)* $(#[$a])* $f: $ty,] $($rest)*);
    };
    (@fields [$($(#[$a:meta])* $f:ident : $ty:ty,)*]) => {
        /// Every mount setting. All optional here; `MountOptions::resolve` applies the defaults.
        #[derive(Debug, Clone, Default, Args, Deserialize)]
        #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
        pub struct MountOptions {
            $($(#[$a])* pub $f: Option<$ty>,)*
        }

        impl MountOptions {
            /// Fill what `self` leaves unset from `lower` (a lower-precedence source).
            pub fn or(self, lower: MountOptions) -> MountOptions {
                MountOptions { $($f: self.$f.or(lower.$f),)* }
            }
        }
    };
    ($($t:tt)*) => { mount_options!(@fields [] $($t)*); };
}

mount_options! {

    /// Refresh token from alist's Aliyundrive Open token tool; only used when the token store is empty.
    #[arg(long, env = "ALIPANFS_REFRESH_TOKEN", hide_env_values = true)]
    refresh_token: String;
    /// Token store: the rotated refresh token is kept here [default: $XDG_STATE_HOME/alipanfs/token.json].
    #[arg(long, env = "ALIPANFS_TOKEN_FILE")]
    token_file: PathBuf;
    /// Open platform app id; blank = refresh through the online token service (--token-url).
    #[arg(long, env = "ALIPANFS_CLIENT_ID")]
    client_id: String;
    /// Open platform app secret (with --client-id).
    #[arg(long, env = "ALIPANFS_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String;
    /// file_id of the drive folder shown as the mount's root [default: root].
    #[arg(long)]
    root_folder_id: String;
    /// Which drive to mount; `all`: each drive of the account as a folder of the root [default: default].
    #[arg(long, value_enum)]
    drive: DriveChoice;
    /// With --drive all, the folder each drive shows as: resource=NAME,backup=NAME (in -o, ':'
    /// between pairs) [default: resource=resource,backup=backup].
    #[arg(long, value_name = "KIND=NAME,...")]
    drive_names: String;
    /// Open API base URL [default: https://openapi.alipan.com].
    #[arg(long, env = "ALIPANFS_API_URL")]
    api_url: String;
    /// Online token service used when --client-id is blank [default: https://api.nn.ci/alist/ali_open/token].
    #[arg(long, env = "ALIPANFS_TOKEN_URL")]
    token_url: String;
    /// Refuse every change with EROFS.
    switch read_only;
    /// Let other users (and root) use the mount; needs user_allow_other in /etc/fuse.conf for non-root.
    switch allow_other;
    /// Owner shown for every file [default: the mounting user].
    #[arg(long)]
    uid: u32;
    /// Group shown for every file [default: the mounting user's group].
    #[arg(long)]
    gid: u32;
    /// Permission bits removed from 0666 (files) and 0777 (folders), octal [default: 022].
    #[arg(long, value_parser = values::parse_octal)]
    #[serde(deserialize_with = "values::de_octal")]
    umask: u32;
    /// Seconds the kernel caches attributes and names [default: 1].
    #[arg(long)]
    attr_timeout: f64;
    /// Seconds a folder listing is trusted before the drive is asked again [default: 60].
    #[arg(long)]
    dir_cache_ttl: f64;
    /// Largest read-ahead window of a sequential reader, e.g. 64M [default: 64M].
    #[arg(long, value_parser = values::parse_size)]
    #[serde(deserialize_with = "values::de_size")]
    max_read_ahead: u64;
    /// Memory all read-ahead buffers share, e.g. 256M [default: 256M].
    #[arg(long, value_parser = values::parse_size)]
    #[serde(deserialize_with = "values::de_size")]
    memory_limit: u64;
    /// Parallel downloads from the drive; the service allows 3 per user across all apps [default: 3].
    #[arg(long)]
    max_downloads: usize;
    /// Folder of staged writes (staging/), cached file data (data/) and listings and URLs kept across remounts (meta/) [default: $XDG_CACHE_HOME/alipanfs].
    #[arg(long, env = "ALIPANFS_CACHE_DIR")]
    cache_dir: PathBuf;
    /// Disk space for cached file data under --cache-dir/data, e.g. 10G; 0 turns the cache off [default: 10G].
    #[arg(long, value_parser = values::parse_size, value_name = "SIZE")]
    #[serde(deserialize_with = "values::de_size")]
    cache_size: u64;
    /// Reads of fully cached files go straight from the kernel to the cache file: auto (when the kernel and privileges allow) or off [default: auto].
    #[arg(long, value_enum)]
    passthrough: Passthrough;
    /// Upload part size, e.g. 16M; raised as needed to stay under 10,000 parts [default: 16M].
    #[arg(long, value_parser = values::parse_size)]
    #[serde(deserialize_with = "values::de_size")]
    part_size: u64;
    /// Delete files permanently instead of moving them to the recycle bin.
    switch delete_permanently;
    /// Refuse chmod/chown to values other than those shown (ENOTSUP), instead of keeping them
    /// for the life of the mount (the drive stores no permissions).
    switch strict_permissions;
    /// A file written from its start in order begins uploading once it has this many bytes,
    /// before it is closed; `off` uploads only after close, so content the drive already has is
    /// always a rapid upload that sends nothing [default: 128M].
    #[arg(long, value_parser = values::parse_size_or_off, value_name = "SIZE|off")]
    #[serde(deserialize_with = "values::de_size_or_off")]
    upload_while_writing: u64;
    /// Rapid upload (秒传): `off` never sends content_hash or pre_hash, so every file's parts
    /// are sent even when the drive already has the content [default: on].
    switch rapid_upload;
    /// Send part uploads to the internal upload host (alist's internal_upload, for Alibaba Cloud ECS in Beijing).
    switch internal_upload;
    /// Origin that --internal-upload sends parts to [default: http://ccp-bj29-bj-1592982087.oss-cn-beijing-internal.aliyuncs.com].
    #[arg(long, value_name = "URL")]
    internal_upload_url: String;
    /// Order of folder entries (readdir, `ls -U`): name, size, updated_at or created_at [default: name].
    #[arg(long, value_enum)]
    order_by: OrderBy;
    /// Direction of --order-by: asc or desc [default: asc].
    #[arg(long, value_enum)]
    order_direction: OrderDirection;
    /// The read-only tree of the drive's video transcodes (HLS) in the mount root [default: on].
    switch transcodes;
    /// Name of the transcodes tree in the mount root, never listed by readdir [default: .transcoded].
    #[arg(long, value_name = "NAME")]
    transcodes_dir: String;
    /// `.livp` live photos are shown as their halves: both (X.jpeg and X.mov), jpeg or mov [default: both].
    #[arg(long, value_enum)]
    livp: LivpMode;
    /// Client-side limit of list calls per second [default: 4].
    #[arg(long)]
    list_rate: f64;
    /// Client-side limit of getDownloadUrl calls per second [default: 1].
    #[arg(long)]
    download_url_rate: f64;
    /// Client-side limit of other API calls per second [default: 15].
    #[arg(long)]
    api_rate: f64;
    /// Seconds to let pending uploads finish when unmounting [default: 300].
    #[arg(long)]
    upload_drain_timeout: f64;
    /// Seconds start-up keeps retrying an unreachable API (network not up yet) [default: 120].
    #[arg(long)]
    startup_timeout: f64;
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (port 0: any free
    /// port, logged) [default: off].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: String;
    /// Download bandwidth of the whole mount, e.g. 10M = 10 MiB/s; 0 = no limit; changed live by `alipanfs set` [default: 0].
    #[arg(long, value_parser = crate::api::bwlimit::parse_rate, value_name = "RATE")]
    #[serde(deserialize_with = "values::de_size")]
    bwlimit_download: u64;
    /// Upload bandwidth of the whole mount, e.g. 10M = 10 MiB/s; 0 = no limit; changed live by `alipanfs set` [default: 0].
    #[arg(long, value_parser = crate::api::bwlimit::parse_rate, value_name = "RATE")]
    #[serde(deserialize_with = "values::de_size")]
    bwlimit_upload: u64;
    /// Seconds between looks for changes made on the drive elsewhere (the phone app, the web,
    /// another computer), which then show in the mount by themselves; 0 = off [default: 60].
    #[arg(long, value_name = "SECONDS")]
    poll_interval: f64;
    /// Command run (`sh -c`) once after a poll or `alipanfs refresh` finds changes, with the
    /// changed folders' paths (relative to the mount root) one per line on stdin and
    /// ALIPANFS_MOUNTPOINT set; its failures are logged [default: none].
    #[arg(long, value_name = "CMD")]
    on_change: String;
    /// Also serve the drive over WebDAV at HOST:PORT (e.g. 127.0.0.1:8080; port 0: any free
    /// port, logged), from this mount's cache, rate budget and upload queue; an address other
    /// than loopback needs --webdav-user [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    webdav_listen: String;
    /// The user WebDAV clients sign in as (HTTP Basic), with --webdav-password-file [default: none].
    #[arg(long, value_name = "NAME")]
    webdav_user: String;
    /// File holding the WebDAV password on its first line, readable by its owner only (chmod 600).
    #[arg(long, value_name = "FILE")]
    webdav_password_file: PathBuf;
    /// PEM certificate (chain) to serve WebDAV over HTTPS, with --webdav-tls-key [default: plain HTTP].
    #[arg(long, value_name = "FILE")]
    webdav_tls_cert: PathBuf;
    /// PEM private key of --webdav-tls-cert.
    #[arg(long, value_name = "FILE")]
    webdav_tls_key: PathBuf;
}

/// The settings after defaults, as the mount uses them.
#[derive(Debug, Clone)]
pub struct Settings {
    pub refresh_token: Option<String>,
    pub token_file: PathBuf,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub root_folder_id: String,
    pub drive: DriveChoice,
    /// `--drive all`: (drive kind, folder name), in the order the folders are listed.
    pub drive_names: Vec<(String, String)>,
    pub api_url: String,
    pub token_url: String,
    pub read_only: bool,
    pub allow_other: bool,
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
    pub attr_timeout: Duration,
    pub dir_cache_ttl: Duration,
    pub max_read_ahead: u64,
    pub memory_limit: u64,
    pub max_downloads: usize,
    pub cache_dir: PathBuf,
    /// 0: no data cache.
    pub cache_size: u64,
    pub passthrough: Passthrough,
    pub part_size: Option<u64>,
    pub delete_permanently: bool,
    pub strict_permissions: bool,
    /// None: uploads start at close.
    pub upload_while_writing: Option<u64>,
    pub rapid_upload: bool,
    /// The origin part uploads are sent to instead of the upload URL's (`--internal-upload`).
    pub upload_origin: Option<String>,
    pub order_by: OrderBy,
    pub order_direction: OrderDirection,
    /// None: no transcodes tree.
    pub transcodes_dir: Option<String>,
    pub livp: LivpMode,
    pub list_rate: f64,
    pub download_url_rate: f64,
    pub api_rate: f64,
    pub upload_drain_timeout: Duration,
    pub startup_timeout: Duration,
    /// None: no metrics listener.
    pub metrics_listen: Option<String>,
    /// Bytes per second, 0 = no limit.
    pub bwlimit_download: u64,
    pub bwlimit_upload: u64,
    /// How often the drive is asked for changes made elsewhere; zero: never (only `refresh`).
    pub poll_interval: Duration,
    /// `--on-change`: run with `sh -c` after changes are found.
    pub on_change: Option<String>,
    /// `--webdav-*`: the WebDAV server's address (None: no server), credentials and TLS.
    pub webdav: crate::webdav::WebdavConfig,
}

impl MountOptions {
    /// Parse a TOML config file (same names as the long options).
    pub fn from_file(path: &Path) -> Result<MountOptions> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("config file {}: {}", path.display(), e.message())))
    }

    pub fn resolve(self) -> Result<Settings> {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let secs = |v: Option<f64>, default: f64, name: &str| -> Result<Duration> {
            let v = v.unwrap_or(default);
            Duration::try_from_secs_f64(v)
                .map_err(|_| Error::Config(format!("--{name} must be a number of seconds ≥ 0")))
        };
        let nonblank = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let client_id = nonblank(self.client_id);
        let client_secret = nonblank(self.client_secret);
        if client_id.is_some() != client_secret.is_some() {
            return Err(Error::Config(
                "give both --client-id and --client-secret, or neither (then the online token service is used)".into(),
            ));
        }
        let settings = Settings {
            refresh_token: nonblank(self.refresh_token).map(|t| t.trim().to_string()),
            token_file: self
                .token_file
                .unwrap_or_else(|| state_dir().join("token.json")),
            client_id,
            client_secret,
            root_folder_id: nonblank(self.root_folder_id)
                .unwrap_or_else(|| crate::drive::ROOT_ID.to_string()),
            drive: self.drive.unwrap_or_default(),
            drive_names: values::drive_names(self.drive_names.as_deref().unwrap_or(""))?,
            api_url: self
                .api_url
                .unwrap_or_else(|| DEFAULT_API_URL.into())
                .trim_end_matches('/')
                .to_string(),
            token_url: self.token_url.unwrap_or_else(|| DEFAULT_TOKEN_URL.into()),
            read_only: self.read_only.unwrap_or(false),
            allow_other: self.allow_other.unwrap_or(false),
            uid: self.uid.unwrap_or(uid),
            gid: self.gid.unwrap_or(gid),
            umask: self.umask.unwrap_or(0o022),
            attr_timeout: secs(self.attr_timeout, 1.0, "attr-timeout")?,
            dir_cache_ttl: secs(self.dir_cache_ttl, 60.0, "dir-cache-ttl")?,
            max_read_ahead: self.max_read_ahead.unwrap_or(64 << 20),
            memory_limit: self.memory_limit.unwrap_or(256 << 20),
            max_downloads: self.max_downloads.unwrap_or(3).max(1),
            cache_dir: self.cache_dir.unwrap_or_else(cache_dir),
            cache_size: self.cache_size.unwrap_or(10 << 30),
            passthrough: self.passthrough.unwrap_or_default(),
            part_size: self.part_size,
            delete_permanently: self.delete_permanently.unwrap_or(false),
            strict_permissions: self.strict_permissions.unwrap_or(false),
            upload_while_writing: match self.upload_while_writing {
                Some(values::OFF) => None,
                Some(size) => Some(size.max(1)),
                None => Some(crate::write::upload::DEFAULT_UPLOAD_WHILE_WRITING),
            },
            rapid_upload: self.rapid_upload.unwrap_or(true),
            upload_origin: match self.internal_upload {
                Some(true) => Some(
                    nonblank(self.internal_upload_url)
                        .unwrap_or_else(|| DEFAULT_INTERNAL_UPLOAD_URL.into())
                        .trim()
                        .trim_end_matches('/')
                        .to_string(),
                ),
                _ => None,
            },
            order_by: self.order_by.unwrap_or_default(),
            order_direction: self.order_direction.unwrap_or_default(),
            transcodes_dir: match self.transcodes {
                Some(false) => None,
                _ => {
                    let name = self.transcodes_dir.unwrap_or_else(|| ".transcoded".into());
                    crate::fs::names::validate(&name).map_err(|_| {
                        Error::Config(format!("--transcodes-dir {name:?} is not a file name"))
                    })?;
                    Some(name)
                }
            },
            livp: self.livp.unwrap_or_default(),
            list_rate: self.list_rate.unwrap_or(4.0),
            download_url_rate: self.download_url_rate.unwrap_or(1.0),
            api_rate: self.api_rate.unwrap_or(15.0),
            upload_drain_timeout: secs(self.upload_drain_timeout, 300.0, "upload-drain-timeout")?,
            startup_timeout: secs(self.startup_timeout, 120.0, "startup-timeout")?,
            metrics_listen: nonblank(self.metrics_listen).map(|a| a.trim().to_string()),
            bwlimit_download: self.bwlimit_download.unwrap_or(0),
            bwlimit_upload: self.bwlimit_upload.unwrap_or(0),
            poll_interval: secs(self.poll_interval, 60.0, "poll-interval")?,
            on_change: nonblank(self.on_change),
            webdav: crate::webdav::WebdavConfig {
                listen: nonblank(self.webdav_listen)
                    .map(|a| a.trim().to_string())
                    .unwrap_or_default(),
                user: nonblank(self.webdav_user),
                password_file: self.webdav_password_file,
                tls_cert: self.webdav_tls_cert,
                tls_key: self.webdav_tls_key,
                read_only: self.read_only.unwrap_or(false),
            },
        };
        if settings.drive == DriveChoice::All && settings.root_folder_id != crate::drive::ROOT_ID {
            return Err(Error::Config(
                "--root-folder-id cannot be used with --drive all (the root shows the drives)"
                    .into(),
            ));
        }
        if !settings.poll_interval.is_zero() && settings.poll_interval < Duration::from_secs(1) {
            return Err(Error::Config(
                "--poll-interval must be 0 (off) or at least 1 second".into(),
            ));
        }
        if settings.memory_limit < 8 << 20 {
            return Err(Error::Config("--memory-limit must be at least 8M".into()));
        }
        if settings.umask > 0o777 {
            return Err(Error::Config(
                "--umask must be an octal number up to 777".into(),
            ));
        }
        Ok(settings)
    }
}
