//! Mount options: one struct serves the command line (clap), the environment (clap's `env`), the
//! TOML config file (serde) and fstab-style `-o` lists, so every option has one name, one default
//! and one line of help. Precedence: command line > environment > `-o` > config file > default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use crate::drive::DriveChoice;
use crate::error::{Error, Result};
use crate::fs::{LivpMode, OrderBy, OrderDirection};

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

/// Every mount setting. All optional here; `Settings::resolve` applies the defaults.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MountOptions {
    /// Refresh token from alist's Aliyundrive Open token tool; only used when the token store is empty.
    #[arg(long, env = "ALIPANFS_REFRESH_TOKEN", hide_env_values = true)]
    pub refresh_token: Option<String>,
    /// Token store: the rotated refresh token is kept here [default: $XDG_STATE_HOME/alipanfs/token.json].
    #[arg(long, env = "ALIPANFS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Open platform app id; blank = refresh through the online token service (--token-url).
    #[arg(long, env = "ALIPANFS_CLIENT_ID")]
    pub client_id: Option<String>,
    /// Open platform app secret (with --client-id).
    #[arg(long, env = "ALIPANFS_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// file_id of the drive folder shown as the mount's root [default: root].
    #[arg(long)]
    pub root_folder_id: Option<String>,
    /// Which drive to mount [default: default].
    #[arg(long, value_enum)]
    pub drive: Option<DriveChoice>,
    /// Open API base URL [default: https://openapi.alipan.com].
    #[arg(long, env = "ALIPANFS_API_URL")]
    pub api_url: Option<String>,
    /// Online token service used when --client-id is blank [default: https://api.nn.ci/alist/ali_open/token].
    #[arg(long, env = "ALIPANFS_TOKEN_URL")]
    pub token_url: Option<String>,
    /// Refuse every change with EROFS.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub read_only: Option<bool>,
    /// Let other users (and root) use the mount; needs user_allow_other in /etc/fuse.conf for non-root.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub allow_other: Option<bool>,
    /// Owner shown for every file [default: the mounting user].
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group shown for every file [default: the mounting user's group].
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permission bits removed from 0666 (files) and 0777 (folders), octal [default: 022].
    #[arg(long, value_parser = parse_octal)]
    #[serde(deserialize_with = "de_octal")]
    pub umask: Option<u32>,
    /// Seconds the kernel caches attributes and names [default: 1].
    #[arg(long)]
    pub attr_timeout: Option<f64>,
    /// Seconds a folder listing is trusted before the drive is asked again [default: 60].
    #[arg(long)]
    pub dir_cache_ttl: Option<f64>,
    /// Largest read-ahead window of a sequential reader, e.g. 64M [default: 64M].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de_size")]
    pub max_read_ahead: Option<u64>,
    /// Memory all read-ahead buffers share, e.g. 256M [default: 256M].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de_size")]
    pub memory_limit: Option<u64>,
    /// Parallel downloads from the drive; the service allows 3 per user across all apps [default: 3].
    #[arg(long)]
    pub max_downloads: Option<usize>,
    /// Folder of staged writes (staging/), cached file data (data/) and listings and URLs kept across remounts (meta/) [default: $XDG_CACHE_HOME/alipanfs].
    #[arg(long, env = "ALIPANFS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Disk space for cached file data under --cache-dir/data, e.g. 10G; 0 turns the cache off [default: 10G].
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    #[serde(deserialize_with = "de_size")]
    pub cache_size: Option<u64>,
    /// Reads of fully cached files go straight from the kernel to the cache file: auto (when the kernel and privileges allow) or off [default: auto].
    #[arg(long, value_enum)]
    pub passthrough: Option<Passthrough>,
    /// Upload part size, e.g. 16M; raised as needed to stay under 10,000 parts [default: 16M].
    #[arg(long, value_parser = parse_size)]
    #[serde(deserialize_with = "de_size")]
    pub part_size: Option<u64>,
    /// Delete files permanently instead of moving them to the recycle bin.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub delete_permanently: Option<bool>,
    /// Refuse chmod/chown to values other than those shown (ENOTSUP), instead of keeping them
    /// for the life of the mount (the drive stores no permissions).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub strict_permissions: Option<bool>,
    /// A file written from its start in order begins uploading once it has this many bytes,
    /// before it is closed; `off` uploads only after close, so content the drive already has is
    /// always a rapid upload that sends nothing [default: 128M].
    #[arg(long, value_parser = parse_size_or_off, value_name = "SIZE|off")]
    #[serde(default, deserialize_with = "de_size_or_off")]
    pub upload_while_writing: Option<u64>,
    /// Rapid upload (秒传): `off` never sends content_hash or pre_hash, so every file's parts
    /// are sent even when the drive already has the content [default: on].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "on", value_name = "on|off",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default, deserialize_with = "de_on_off")]
    pub rapid_upload: Option<bool>,
    /// Send part uploads to the internal upload host (alist's internal_upload, for Alibaba Cloud ECS in Beijing).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub internal_upload: Option<bool>,
    /// Origin that --internal-upload sends parts to [default: http://ccp-bj29-bj-1592982087.oss-cn-beijing-internal.aliyuncs.com].
    #[arg(long, value_name = "URL")]
    pub internal_upload_url: Option<String>,
    /// Order of folder entries (readdir, `ls -U`): name, size, updated_at or created_at [default: name].
    #[arg(long, value_enum)]
    pub order_by: Option<OrderBy>,
    /// Direction of --order-by: asc or desc [default: asc].
    #[arg(long, value_enum)]
    pub order_direction: Option<OrderDirection>,
    /// The read-only tree of the drive's video transcodes (HLS) in the mount root [default: on].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "on", value_name = "on|off",
          value_parser = clap::builder::BoolishValueParser::new())]
    #[serde(default, deserialize_with = "de_on_off")]
    pub transcodes: Option<bool>,
    /// Name of the transcodes tree in the mount root, never listed by readdir [default: .transcoded].
    #[arg(long, value_name = "NAME")]
    pub transcodes_dir: Option<String>,
    /// `.livp` live photos are shown as their halves: both (X.jpeg and X.mov), jpeg or mov [default: both].
    #[arg(long, value_enum)]
    pub livp: Option<LivpMode>,
    /// Client-side limit of list calls per second [default: 4].
    #[arg(long)]
    pub list_rate: Option<f64>,
    /// Client-side limit of getDownloadUrl calls per second [default: 1].
    #[arg(long)]
    pub download_url_rate: Option<f64>,
    /// Client-side limit of other API calls per second [default: 15].
    #[arg(long)]
    pub api_rate: Option<f64>,
    /// Seconds to let pending uploads finish when unmounting [default: 300].
    #[arg(long)]
    pub upload_drain_timeout: Option<f64>,
    /// Seconds start-up keeps retrying an unreachable API (network not up yet) [default: 120].
    #[arg(long)]
    pub startup_timeout: Option<f64>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (port 0: any free
    /// port, logged) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Download bandwidth of the whole mount, e.g. 10M = 10 MiB/s; 0 = no limit; changed live by `alipanfs set` [default: 0].
    #[arg(long, value_parser = crate::api::bwlimit::parse_rate, value_name = "RATE")]
    #[serde(deserialize_with = "de_size")]
    pub bwlimit_download: Option<u64>,
    /// Upload bandwidth of the whole mount, e.g. 10M = 10 MiB/s; 0 = no limit; changed live by `alipanfs set` [default: 0].
    #[arg(long, value_parser = crate::api::bwlimit::parse_rate, value_name = "RATE")]
    #[serde(deserialize_with = "de_size")]
    pub bwlimit_upload: Option<u64>,
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
}

impl MountOptions {
    /// Fill what `self` leaves unset from `lower` (a lower-precedence source).
    pub fn or(self, lower: MountOptions) -> MountOptions {
        MountOptions {
            refresh_token: self.refresh_token.or(lower.refresh_token),
            token_file: self.token_file.or(lower.token_file),
            client_id: self.client_id.or(lower.client_id),
            client_secret: self.client_secret.or(lower.client_secret),
            root_folder_id: self.root_folder_id.or(lower.root_folder_id),
            drive: self.drive.or(lower.drive),
            api_url: self.api_url.or(lower.api_url),
            token_url: self.token_url.or(lower.token_url),
            read_only: self.read_only.or(lower.read_only),
            allow_other: self.allow_other.or(lower.allow_other),
            uid: self.uid.or(lower.uid),
            gid: self.gid.or(lower.gid),
            umask: self.umask.or(lower.umask),
            attr_timeout: self.attr_timeout.or(lower.attr_timeout),
            dir_cache_ttl: self.dir_cache_ttl.or(lower.dir_cache_ttl),
            max_read_ahead: self.max_read_ahead.or(lower.max_read_ahead),
            memory_limit: self.memory_limit.or(lower.memory_limit),
            max_downloads: self.max_downloads.or(lower.max_downloads),
            cache_dir: self.cache_dir.or(lower.cache_dir),
            cache_size: self.cache_size.or(lower.cache_size),
            passthrough: self.passthrough.or(lower.passthrough),
            part_size: self.part_size.or(lower.part_size),
            delete_permanently: self.delete_permanently.or(lower.delete_permanently),
            strict_permissions: self.strict_permissions.or(lower.strict_permissions),
            upload_while_writing: self.upload_while_writing.or(lower.upload_while_writing),
            rapid_upload: self.rapid_upload.or(lower.rapid_upload),
            internal_upload: self.internal_upload.or(lower.internal_upload),
            internal_upload_url: self.internal_upload_url.or(lower.internal_upload_url),
            order_by: self.order_by.or(lower.order_by),
            order_direction: self.order_direction.or(lower.order_direction),
            transcodes: self.transcodes.or(lower.transcodes),
            transcodes_dir: self.transcodes_dir.or(lower.transcodes_dir),
            livp: self.livp.or(lower.livp),
            list_rate: self.list_rate.or(lower.list_rate),
            download_url_rate: self.download_url_rate.or(lower.download_url_rate),
            api_rate: self.api_rate.or(lower.api_rate),
            upload_drain_timeout: self.upload_drain_timeout.or(lower.upload_drain_timeout),
            startup_timeout: self.startup_timeout.or(lower.startup_timeout),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            bwlimit_download: self.bwlimit_download.or(lower.bwlimit_download),
            bwlimit_upload: self.bwlimit_upload.or(lower.bwlimit_upload),
        }
    }

    /// Parse a TOML config file (same names as the long options).
    pub fn from_file(path: &Path) -> Result<MountOptions> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        toml::from_str(&text)
            .map_err(|e| Error::Config(format!("config file {}: {}", path.display(), e.message())))
    }

    /// Parse fstab-style options (`ro,allow_other,uid=1000,drive=resource`) into the same struct
    /// as the config file, through the same serde attributes: `name=value` sets any long option
    /// (`_` or `-`), a bare `name` sets a boolean (`name=false` clears it), and `ro`/`rw`,
    /// `allow_root` are fstab's spellings. Options that only mean something to mount(8) or systemd
    /// are accepted and ignored; unknown ones are refused by name; secrets are refused (everyone
    /// can read mount options in /proc/mounts and ps).
    pub fn from_o_list(list: &[String]) -> Result<MountOptions> {
        let mut map: Vec<(String, String)> = Vec::new();
        for item in list
            .iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim().replace('_', "-"), Some(v.to_string())),
                None => (item.replace('_', "-"), None),
            };
            let (key, value) = match key.as_str() {
                "ro" => ("read-only".to_string(), value.or(Some("true".into()))),
                "rw" => ("read-only".to_string(), Some("false".into())),
                "allow-root" => ("allow-other".to_string(), value.or(Some("true".into()))),
                // For mount(8), fstab and systemd only.
                "-netdev" | "nofail" | "auto" | "noauto" | "user" | "nouser" | "users" | "defaults"
                | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime" | "noatime"
                | "relatime" | "default-permissions" => continue,
                k if k.starts_with("x-") || k.starts_with("comment") => continue,
                "refresh-token" | "client-secret" => {
                    return Err(Error::Config(format!(
                        "mount option {} is refused: options are visible to every user in /proc/mounts and ps; \
                         use --token-file (alipanfs token set) or the config file",
                        key.replace('-', "_")
                    )))
                }
                _ => (key, value),
            };
            let value = match value {
                Some(v) => v,
                None => match long_options().into_iter().find(|(name, _)| *name == key) {
                    Some((_, true)) => "true".into(),
                    Some((_, false)) => {
                        return Err(Error::Config(format!("mount option {key} needs a value")))
                    }
                    None => return Err(Error::Config(format!("unknown mount option: {item}"))),
                },
            };
            map.retain(|(k, _)| *k != key);
            map.push((key, value));
        }
        let parse = |entries: &[(String, String)]| {
            let de = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(
                entries.iter().map(|(k, v)| (k.clone(), OValue(v.clone()))),
            );
            MountOptions::deserialize(de)
        };
        parse(&map).map_err(|e| {
            let msg = e.to_string();
            if let Some(rest) = msg.strip_prefix("unknown field `") {
                let name = rest.split('`').next().unwrap_or(rest);
                return Error::Config(format!("unknown mount option: {name}"));
            }
            // Name the option whose value was refused.
            match map
                .iter()
                .find(|kv| parse(std::slice::from_ref(kv)).is_err())
            {
                Some((k, v)) => Error::Config(format!("mount option {k}={v}: {msg}")),
                None => Error::Config(format!("mount options: {msg}")),
            }
        })
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
                Some(OFF) => None,
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
        };
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

/// Every long option of `MountOptions` as clap knows it, and whether it is a boolean (one that
/// may be given without a value).
pub fn long_options() -> Vec<(String, bool)> {
    use clap::Args as _;
    MountOptions::augment_args(clap::Command::new("alipanfs"))
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            Some((long, a.get_num_args().is_some_and(|n| n.min_values() == 0)))
        })
        .collect()
}

/// `--no-NAME` for every switch NAME (`--no-read-only`, `--no-delete-permanently`, ...) is
/// `--NAME=false`, so a switch set in the config file or `-o` can be undone on the command line.
pub fn expand_negations(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let switches: Vec<String> = long_options()
        .into_iter()
        .filter_map(|(long, switch)| switch.then_some(long))
        .collect();
    argv.into_iter()
        .map(|arg| {
            let negated = arg
                .to_str()
                .and_then(|a| a.strip_prefix("--no-"))
                .filter(|name| switches.iter().any(|s| s == name));
            match negated {
                Some(name) => format!("--{name}=false").into(),
                None => arg,
            }
        })
        .collect()
}

/// One `-o` value: text that each field parses as its own type (the config file's types, from
/// the words of a mount option list).
struct OValue(String);

impl<'de> serde::de::IntoDeserializer<'de, serde::de::value::Error> for OValue {
    type Deserializer = OValue;
    fn into_deserializer(self) -> OValue {
        self
    }
}

macro_rules! parse_as {
    ($($method:ident => $visit:ident),* $(,)?) => {$(
        fn $method<V: serde::de::Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, Self::Error> {
            match self.0.trim().parse() {
                Ok(n) => v.$visit(n),
                Err(_) => Err(serde::de::Error::custom(format!("'{}' is not a number", self.0))),
            }
        }
    )*};
}

impl<'de> serde::de::Deserializer<'de> for OValue {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        v.visit_string(self.0)
    }

    fn deserialize_bool<V: serde::de::Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "" | "true" | "yes" | "on" | "1" => v.visit_bool(true),
            "false" | "no" | "off" | "0" => v.visit_bool(false),
            _ => Err(serde::de::Error::custom(format!(
                "'{}' is not a boolean (true or false)",
                self.0
            ))),
        }
    }

    parse_as!(
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16, deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64, deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64, deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
    );

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        v.visit_some(self)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        use serde::de::IntoDeserializer;
        v.visit_enum(self.0.to_ascii_lowercase().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

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

/// Sizes like `4096`, `64K`, `64M`, `1G`, `256MiB` (binary units).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 64M)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub fn parse_octal(s: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
        .map_err(|_| format!("'{s}' is not an octal number"))
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SizeValue {
        Num(u64),
        Text(String),
    }
    match Option::<SizeValue>::deserialize(d)? {
        None => Ok(None),
        Some(SizeValue::Num(n)) => Ok(Some(n)),
        Some(SizeValue::Text(s)) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// `off` as a size: never reached.
const OFF: u64 = u64::MAX;

/// A size, or `off`.
pub fn parse_size_or_off(s: &str) -> std::result::Result<u64, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" | "no" | "false" | "never" => Ok(OFF),
        _ => parse_size(s),
    }
}

fn de_size_or_off<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Num(u64),
        Flag(bool),
        Text(String),
    }
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::Num(n)) => Ok(Some(n)),
        Some(Value::Flag(false)) => Ok(Some(OFF)),
        Some(Value::Flag(true)) => Ok(None),
        Some(Value::Text(s)) => parse_size_or_off(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// A boolean, or the words `on`/`off` (and yes/no, 1/0).
fn de_on_off<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Flag(bool),
        Text(String),
    }
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::Flag(b)) => Ok(Some(b)),
        Some(Value::Text(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(Some(true)),
            "off" | "false" | "no" | "0" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!("'{s}' is not on or off"))),
        },
    }
}

fn de_octal<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u32>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_octal(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_octal() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert_eq!(parse_octal("022"), Ok(0o22));
        assert!(parse_octal("9").is_err());
    }

    #[test]
    fn o_list_maps_fstab_options_and_refuses_unknown_ones_by_name() {
        let o = MountOptions::from_o_list(&[
            "ro,allow_other,uid=1000,_netdev,x-systemd.automount,drive=resource".into(),
        ])
        .unwrap();
        assert_eq!((o.read_only, o.allow_other), (Some(true), Some(true)));
        assert_eq!(o.uid, Some(1000));
        assert_eq!(o.drive, Some(DriveChoice::Resource));
        let err = MountOptions::from_o_list(&["ro,frobnicate".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("frobnicate"), "{err}");
        assert!(MountOptions::from_o_list(&["refresh_token=x".into()]).is_err());
    }

    #[test]
    fn config_file_uses_the_long_option_names() {
        let o: MountOptions = toml::from_str(
            "drive = \"backup\"\nmax-read-ahead = \"32M\"\nread-only = true\numask = \"077\"\ndir-cache-ttl = 5\n",
        )
        .unwrap();
        assert_eq!(o.drive, Some(DriveChoice::Backup));
        assert_eq!(o.max_read_ahead, Some(32 << 20));
        assert_eq!(o.umask, Some(0o77));
        assert_eq!(o.read_only, Some(true));
        assert!(toml::from_str::<MountOptions>("no-such-option = 1").is_err());
        // The command line wins over the file.
        let cli = MountOptions {
            drive: Some(DriveChoice::Resource),
            ..Default::default()
        };
        assert_eq!(cli.or(o).drive, Some(DriveChoice::Resource));
    }

    #[test]
    fn upload_while_writing_takes_a_size_or_off() {
        let resolved = |o: MountOptions| o.resolve().unwrap().upload_while_writing;
        assert_eq!(resolved(MountOptions::default()), Some(128 << 20));
        let o = MountOptions::from_o_list(&["upload_while_writing=off".into()]).unwrap();
        assert_eq!(resolved(o), None);
        let o = MountOptions::from_o_list(&["upload_while_writing=64M".into()]).unwrap();
        assert_eq!(resolved(o), Some(64 << 20));
        for (toml_text, want) in [
            ("upload-while-writing = \"off\"", None),
            ("upload-while-writing = false", None),
            ("upload-while-writing = \"1G\"", Some(1 << 30)),
            ("upload-while-writing = 1048576", Some(1 << 20)),
        ] {
            let o: MountOptions = toml::from_str(toml_text).unwrap();
            assert_eq!(resolved(o), want, "{toml_text}");
        }
        assert!(parse_size_or_off("sometimes").is_err());
    }

    #[test]
    fn rapid_upload_is_on_unless_turned_off() {
        let resolved = |o: MountOptions| o.resolve().unwrap().rapid_upload;
        assert!(resolved(MountOptions::default()));
        assert!(!resolved(from_cli(&["--rapid-upload=off".into()])));
        assert!(!resolved(from_cli(&["--rapid-upload=false".into()])));
        assert!(resolved(from_cli(&["--rapid-upload=on".into()])));
        let o = MountOptions::from_o_list(&["rapid_upload=off".into()]).unwrap();
        assert!(!resolved(o));
        for (text, want) in [
            ("rapid-upload = \"off\"", false),
            ("rapid-upload = false", false),
            ("rapid-upload = \"on\"", true),
        ] {
            let o: MountOptions = toml::from_str(text).unwrap();
            assert_eq!(resolved(o), want, "{text}");
        }
        assert!(toml::from_str::<MountOptions>("rapid-upload = \"maybe\"").is_err());
    }

    #[test]
    fn internal_upload_sends_parts_to_the_configured_origin() {
        let origin = |o: MountOptions| o.resolve().unwrap().upload_origin;
        assert_eq!(origin(MountOptions::default()), None);
        let on = MountOptions {
            internal_upload: Some(true),
            ..Default::default()
        };
        assert_eq!(
            origin(on.clone()).as_deref(),
            Some(DEFAULT_INTERNAL_UPLOAD_URL)
        );
        let elsewhere = MountOptions {
            internal_upload_url: Some("http://10.0.0.1:8080/".into()),
            ..on
        };
        assert_eq!(
            origin(elsewhere.clone()).as_deref(),
            Some("http://10.0.0.1:8080")
        );
        // The URL alone does not turn it on.
        let off = MountOptions {
            internal_upload: Some(false),
            ..elsewhere
        };
        assert_eq!(origin(off), None);
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let o: MountOptions =
            toml::from_str(include_str!("../../contrib/config.example.toml")).unwrap();
        assert_eq!(o.drive, Some(DriveChoice::Resource));
        o.resolve().unwrap();
    }

    #[test]
    fn transcodes_tree_is_on_under_its_default_name_unless_turned_off() {
        let dir = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            from_cli(&args).resolve().map(|r| r.transcodes_dir)
        };
        assert_eq!(dir(&[]).unwrap().as_deref(), Some(".transcoded"));
        assert_eq!(
            dir(&["--transcodes-dir", ".hls"]).unwrap().as_deref(),
            Some(".hls")
        );
        assert_eq!(
            dir(&["--transcodes=off", "--transcodes-dir", ".hls"]).unwrap(),
            None
        );
        assert!(dir(&["--transcodes-dir", "a/b"]).is_err());
        let o = MountOptions::from_o_list(&["transcodes=off,livp=mov".into()]).unwrap();
        let r = o.resolve().unwrap();
        assert_eq!((r.transcodes_dir, r.livp), (None, LivpMode::Mov));
    }

    #[test]
    fn client_id_without_secret_is_refused() {
        let o = MountOptions {
            client_id: Some("id".into()),
            ..Default::default()
        };
        assert!(o.resolve().is_err());
        let s = MountOptions::default().resolve().unwrap();
        assert_eq!(s.root_folder_id, "root");
        assert_eq!(s.api_url, DEFAULT_API_URL);
    }

    /// A valid value for every long option, as TOML (the `-o` and command-line forms drop the
    /// quotes). The test below fails for an option missing here, so none can be forgotten.
    fn sample(long: &str) -> &'static str {
        match long {
            "refresh-token" => "\"eyJ.sample.token\"",
            "token-file" => "\"/tmp/token.json\"",
            "client-id" => "\"app-id\"",
            "client-secret" => "\"app-secret\"",
            "root-folder-id" => "\"0123abcd\"",
            "drive" => "\"resource\"",
            "api-url" => "\"http://127.0.0.1:9\"",
            "token-url" => "\"http://127.0.0.1:9/token\"",
            "read-only" | "allow-other" | "delete-permanently" | "strict-permissions" => "true",
            "uid" => "1234",
            "gid" => "4321",
            "umask" => "\"077\"",
            "attr-timeout" => "2.5",
            "dir-cache-ttl" => "30",
            "max-read-ahead" => "\"32M\"",
            "memory-limit" => "\"512M\"",
            "max-downloads" => "2",
            "cache-dir" => "\"/tmp/alipanfs-cache\"",
            "cache-size" => "\"2G\"",
            "passthrough" => "\"off\"",
            "part-size" => "\"8M\"",
            "upload-while-writing" => "\"off\"",
            // "on" because the bare switch (`--rapid-upload`, `-o rapid_upload`) means on.
            "rapid-upload" => "\"on\"",
            "internal-upload" => "true",
            "internal-upload-url" => "\"http://127.0.0.1:9/internal\"",
            "order-by" => "\"updated_at\"",
            "order-direction" => "\"desc\"",
            "transcodes" => "\"on\"",
            "transcodes-dir" => "\".videos\"",
            "livp" => "\"jpeg\"",
            "list-rate" => "2.5",
            "download-url-rate" => "0.5",
            "api-rate" => "7",
            "upload-drain-timeout" => "12",
            "startup-timeout" => "9",
            "metrics-listen" => "\"127.0.0.1:9464\"",
            "bwlimit-download" => "\"20M\"",
            "bwlimit-upload" => "\"512K\"",
            other => panic!("add a sample value for the new option --{other}"),
        }
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        o: MountOptions,
    }

    fn from_cli(args: &[String]) -> MountOptions {
        use clap::Parser as _;
        let argv = std::iter::once("alipanfs".to_string()).chain(args.iter().cloned());
        Cli::try_parse_from(argv).unwrap().o
    }

    #[test]
    fn every_long_option_works_on_the_command_line_in_o_and_in_the_config_file() {
        let longs = long_options();
        assert!(longs.len() >= 28, "{longs:?}");
        let default = format!("{:?}", MountOptions::default());
        for (long, is_bool) in longs {
            let toml_value = sample(&long);
            let plain = toml_value.trim_matches('"');
            let file: MountOptions = toml::from_str(&format!("{long} = {toml_value}"))
                .unwrap_or_else(|e| panic!("config file {long}: {e}"));
            let set = format!("{file:?}");
            assert_ne!(set, default, "{long} in the config file set nothing");
            let cli = from_cli(&[format!("--{long}={plain}")]);
            assert_eq!(format!("{cli:?}"), set, "--{long}");
            if is_bool {
                assert_eq!(format!("{:?}", from_cli(&[format!("--{long}")])), set);
            }
            for key in [long.clone(), long.replace('-', "_")] {
                let o = MountOptions::from_o_list(&[format!("{key}={plain}")]);
                if long == "refresh-token" || long == "client-secret" {
                    // Everyone can read /proc/mounts and ps: secrets never go in -o.
                    let err = o.unwrap_err().to_string();
                    assert!(err.contains("refused"), "{err}");
                    continue;
                }
                let o = o.unwrap_or_else(|e| panic!("-o {key}={plain}: {e}"));
                assert_eq!(format!("{o:?}"), set, "-o {key}={plain}");
                if is_bool {
                    let bare = MountOptions::from_o_list(std::slice::from_ref(&key)).unwrap();
                    assert_eq!(format!("{bare:?}"), set, "-o {key}");
                }
            }
        }
    }

    #[test]
    fn booleans_can_be_set_both_ways_and_precedence_holds() {
        let file: MountOptions = toml::from_str(
            "read-only = true\ndelete-permanently = true\nstrict-permissions = true\nallow-other = true\n",
        )
        .unwrap();
        // -o rw beats the config file's read-only = true.
        let o = MountOptions::from_o_list(&["rw".into()]).unwrap();
        let s = o.or(file.clone()).resolve().unwrap();
        assert!(!s.read_only);
        assert!(s.delete_permanently && s.strict_permissions && s.allow_other);
        let o = MountOptions::from_o_list(&[
            "delete_permanently=false,strict-permissions=no,allow_other=0".into(),
        ])
        .unwrap();
        let s = o.or(file.clone()).resolve().unwrap();
        assert!(s.read_only && !s.delete_permanently && !s.strict_permissions && !s.allow_other);
        // The command line beats -o and the file, both ways.
        let cli = from_cli(&[
            "--read-only=false".into(),
            "--delete-permanently=false".into(),
        ]);
        let o = MountOptions::from_o_list(&["ro".into()]).unwrap();
        let s = cli.or(o).or(file.clone()).resolve().unwrap();
        assert!(!s.read_only && !s.delete_permanently);
        let cli = from_cli(&["--read-only".into()]);
        let o = MountOptions::from_o_list(&["rw".into()]).unwrap();
        assert!(cli.or(o).resolve().unwrap().read_only);
        // The last of repeated -o words wins, as mount(8) does.
        let o = MountOptions::from_o_list(&["ro,rw".into()]).unwrap();
        assert_eq!(o.read_only, Some(false));
        let o = MountOptions::from_o_list(&["rw".into(), "ro".into()]).unwrap();
        assert_eq!(o.read_only, Some(true));
        // Nothing said: off.
        assert!(!MountOptions::default().resolve().unwrap().read_only);
        // --no-NAME is NAME=false, for every switch.
        let argv = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(
            expand_negations(argv(&[
                "alipanfs",
                "mount",
                "--no-delete-permanently",
                "--no-such"
            ])),
            argv(&[
                "alipanfs",
                "mount",
                "--delete-permanently=false",
                "--no-such"
            ])
        );
        for (long, switch) in long_options() {
            if switch {
                let out = expand_negations(argv(&[&format!("--no-{long}")]));
                assert_eq!(out, argv(&[&format!("--{long}=false")]));
            }
        }
        // Bad values are refused by option name.
        let err = MountOptions::from_o_list(&["uid=me".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("uid"), "{err}");
        let err = MountOptions::from_o_list(&["read_only=maybe".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("read"), "{err}");
        let err = MountOptions::from_o_list(&["max_downloads".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a value"), "{err}");
    }
}
