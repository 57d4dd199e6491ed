//! The command line: `alipanfs mount | status | sync | set | login | emulator | about | token set | completions | man`.

pub mod daemon;
pub mod helper;
pub mod login;
pub mod mount;
pub mod notify;
pub mod options;
pub mod serve;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use tracing::error;

use crate::error::{Error, Result};
use options::{MountOptions, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "alipanfs",
    version,
    about = "Mount an Aliyundrive (alipan) drive as a local directory"
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace, off) or TARGET=LEVEL directives separated by commas (warn,alipanfs::write=debug); RUST_LOG overrides it.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "ALIPANFS_LOG_LEVEL",
        value_parser = |s: &str| crate::logging::parse_filter(s).map(|_| s.to_string())
    )]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount the drive at MOUNTPOINT.
    Mount(MountArgs),
    /// Show what a running mount is doing: uploads, reads, API calls, token age.
    Status(StatusArgs),
    /// Wait until files closed before the call are on the drive and verified.
    Sync(SyncArgs),
    /// Re-read folders from the drive now (changes made elsewhere show at once); exit 0 once
    /// they are visible.
    Refresh(RefreshArgs),
    /// Change a running mount's settings: bwlimit-download=RATE, bwlimit-upload=RATE (10M =
    /// 10 MiB/s, 0 = off), log-level=LEVEL.
    Set(SetArgs),
    /// Serve the drive to other devices without a mount: `serve webdav --addr HOST:PORT`.
    #[command(subcommand)]
    Serve(ServeCommand),
    /// Sign in by scanning a QR code with the Aliyundrive app; stores the refresh token.
    Login(login::LoginArgs),
    /// Serve an emulator of the Open API on 127.0.0.1 (for tests, benchmarks and the demo).
    Emulator(EmulatorArgs),
    /// Show the signed-in user, drive, space and token store.
    About(AboutArgs),
    /// Manage the token store.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// Where to mount (an empty directory).
    pub mountpoint: PathBuf,
    /// Stay in the foreground (default: return once the mount is up, and serve in the background).
    #[arg(short, long)]
    pub foreground: bool,
    /// Mount options as in fstab: -o ro,allow_other,uid=1000,drive=resource (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub o: Vec<String>,
    /// TOML config file with the long option names as keys [default: $XDG_CONFIG_HOME/alipanfs/config.toml].
    #[arg(long, env = "ALIPANFS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Try it without an account: start a local emulator with a sample tree and mount it.
    #[arg(long)]
    pub demo: bool,
    #[command(flatten)]
    pub options: MountOptions,
}

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Serve the drive over WebDAV (foreground; SIGTERM lets uploads finish, as an unmount
    /// does). Takes every option of `mount`.
    Webdav(serve::ServeWebdavArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The mount point, or a path inside the mount [default: every mount of this user].
    pub mountpoint: Option<PathBuf>,
    /// Print JSON (one object for a MOUNTPOINT, else an array).
    #[arg(long)]
    pub json: bool,
    /// Redraw every second until interrupted.
    #[arg(long)]
    pub watch: bool,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    /// Files or folders inside a mount [default: the whole mount of the current directory].
    pub paths: Vec<PathBuf>,
    /// Give up after this many seconds, naming what is still uploading (exit 1).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct RefreshArgs {
    /// Folders inside a mount (a file: its folder) [default: the root of the mount of the
    /// current directory].
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The mount point, or a path inside the mount.
    pub mountpoint: PathBuf,
    /// One or more KEY=VALUE: bwlimit-download=10M, bwlimit-upload=0, log-level=debug.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct AboutArgs {
    /// TOML config file [default: $XDG_CONFIG_HOME/alipanfs/config.toml].
    #[arg(long, env = "ALIPANFS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: MountOptions,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Read a refresh token from standard input into the token store (never from argv, where ps shows it).
    Set {
        /// Token store [default: $XDG_STATE_HOME/alipanfs/token.json].
        #[arg(long, env = "ALIPANFS_TOKEN_FILE")]
        token_file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Folder keeping the whole emulated drive (tree, trash, quota, tokens, unfinished uploads,
    /// file bodies); started again on it, the emulator serves the same drive [default: a new
    /// temporary folder, not kept].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The first valid refresh token (default: a generated one, printed at start); a JWT's `sub`
    /// names the emulated user. Ignored when --data already holds a drive.
    #[arg(long)]
    pub refresh_token: Option<String>,
    /// Seed a sample tree (folders, text, a large file, a video).
    #[arg(long)]
    pub seed_demo: bool,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    pub access_token_ttl: u64,
    /// Longest download-URL lifetime in seconds.
    #[arg(long, default_value_t = 14400)]
    pub download_url_ttl: u64,
    /// Upload part URL lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub upload_url_ttl: u64,
    /// Unfinished uploads (and their parts) are dropped this many seconds after create [default: 10 days].
    #[arg(long)]
    pub upload_ttl: Option<u64>,
    /// Seconds a video's full transcode takes after its first play-info request.
    #[arg(long, default_value_t = crate::emulator::DEFAULT_TRANSCODE_TIME.as_secs_f64())]
    pub transcode_time: f64,
    /// Serve the (unconfirmed) delta feed: openFile/list_delta and openFile/get_last_cursor.
    #[arg(long)]
    pub delta_feed: bool,
    /// list calls per second per user (0 = unlimited).
    #[arg(long, default_value_t = 4.0)]
    pub list_rate: f64,
    /// getDownloadUrl calls per second per user (0 = unlimited).
    #[arg(long, default_value_t = 1.0)]
    pub download_url_rate: f64,
    /// Other API calls per second per user (0 = unlimited).
    #[arg(long, default_value_t = 15.0)]
    pub api_rate: f64,
    /// Concurrent downloads per user (0 = unlimited).
    #[arg(long, default_value_t = 3)]
    pub max_downloads: usize,
    /// Drive size, e.g. 6T.
    #[arg(long, value_parser = options::parse_size, default_value = "6T")]
    pub quota: u64,
    /// Fraction of requests failing with 500 or a dropped connection.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Bandwidth cap of each download connection, e.g. 50M (bytes per second).
    #[arg(long, value_parser = options::parse_size)]
    pub bandwidth: Option<u64>,
    /// Bandwidth all download connections share, like the user's link, e.g. 100M (bytes per
    /// second).
    #[arg(long, value_parser = options::parse_size)]
    pub link_bandwidth: Option<u64>,
    /// Bandwidth cap of each part upload, e.g. 1M (bytes per second).
    #[arg(long, value_parser = options::parse_size)]
    pub upload_bandwidth: Option<u64>,
}

pub fn main() -> i32 {
    let argv = match helper::invocation(std::env::args_os().collect()) {
        Ok(helper::Invocation::Cli(argv) | helper::Invocation::Helper(argv)) => argv,
        Ok(helper::Invocation::Fake) => return 0,
        Err(e) => {
            eprintln!("mount.fuse.alipanfs: {e}");
            // mount(8)'s exit code for usage errors.
            return 1;
        }
    };
    let cli = match options::prepare_argv(argv.clone()) {
        Ok(argv) => Cli::parse_from(argv),
        Err(e) => {
            eprintln!("alipanfs: {e}");
            // clap's exit code for usage errors.
            return 2;
        }
    };
    // The control commands print their own one-line errors, without log lines.
    match &cli.command {
        Command::Status(a) => {
            return crate::control::client::status(a.mountpoint.as_deref(), a.json, a.watch)
        }
        Command::Sync(a) => return crate::control::client::sync(&a.paths, a.timeout),
        Command::Set(a) => return crate::control::client::set(&a.mountpoint, &a.settings),
        Command::Refresh(a) => return crate::control::client::refresh(&a.paths),
        Command::Login(a) => return login::main(a),
        _ => {}
    }
    crate::logging::init(&cli.log_level);
    match run(cli, argv) {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            // Not eprintln!: it panics when stderr cannot be written (a full disk).
            let _ = writeln!(std::io::stderr(), "alipanfs: {e}");
            1
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(Error::Io)
}

/// Command line, then environment (both through clap), then `-o`, then the config file.
fn settings(cli: MountOptions, o: &[String], config: Option<PathBuf>) -> Result<Settings> {
    let mut merged = cli.or(MountOptions::from_o_list(o)?);
    let file = match config {
        Some(path) => Some(MountOptions::from_file(&path)?),
        None => {
            let default = options::default_config_file();
            default
                .exists()
                .then(|| MountOptions::from_file(&default))
                .transpose()?
        }
    };
    if let Some(file) = file {
        merged = merged.or(file);
    }
    merged.resolve()
}

/// `argv` is the (possibly helper-rewritten) command line, replayed by daemon mode.
fn run(cli: Cli, argv: Vec<std::ffi::OsString>) -> Result<()> {
    match cli.command {
        Command::Mount(args) => run_mount(args, argv),
        Command::Status(_)
        | Command::Sync(_)
        | Command::Refresh(_)
        | Command::Set(_)
        | Command::Login(_) => Ok(()), // handled in `main`
        Command::Serve(ServeCommand::Webdav(args)) => serve::run_webdav(args),
        Command::Emulator(args) => run_emulator(args),
        Command::About(args) => run_about(args),
        Command::Token(TokenCommand::Set { token_file }) => {
            let path = token_file.unwrap_or_else(|| options::state_dir().join("token.json"));
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            let token = input.trim();
            if token.is_empty() {
                return Err(Error::Config("no refresh token on standard input".into()));
            }
            if token.split('.').count() != 3 {
                return Err(Error::Config(
                    "that is not an Open platform refresh token (a JWT: three dot-separated parts); \
                     get one from alist's Aliyundrive Open token tool"
                        .into(),
                ));
            }
            crate::api::store_refresh_token(&path, token)?;
            println!("refresh token stored in {}", path.display());
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "alipanfs",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

fn run_mount(args: MountArgs, argv: Vec<std::ffi::OsString>) -> Result<()> {
    let mut s = settings(args.options, &args.o, args.config)?;
    let mountpoint = mount::check_mountpoint(&args.mountpoint)?;
    if !args.foreground && !args.demo {
        return daemon::detach(&mountpoint, argv.into_iter().skip(1).collect());
    }
    let rt = runtime()?;
    // The demo emulator lives as long as the mount.
    let _demo = if args.demo {
        let demo = rt.block_on(demo_emulator())?;
        s.api_url = demo.api_url();
        s.client_id = Some(crate::emulator::EmulatorConfig::default().client_id);
        s.client_secret = Some(crate::emulator::EmulatorConfig::default().client_secret);
        s.refresh_token = Some(demo.refresh_token());
        let state = std::env::temp_dir().join(format!("alipanfs-demo-{}", std::process::id()));
        s.token_file = state.join("token.json");
        s.cache_dir = state.join("cache");
        println!(
            "demo: emulator on {} with a sample tree; mounting at {}",
            demo.api_url(),
            mountpoint.display()
        );
        println!(
            "demo: try  ls -l {0}  and  cat {0}/README.txt ; Ctrl-C unmounts",
            mountpoint.display()
        );
        Some(demo)
    } else {
        None
    };
    let serve::Opened {
        client,
        drive,
        core,
    } = serve::open_core(&rt, &s)?;
    let poller = rt.block_on(mount::start_poller(&core, drive, &s, &mountpoint));
    if let Err(e) = rt.block_on(mount::start_metrics(&s, client.clone(), &core)) {
        daemon::report_failure(&e);
        return Err(e);
    }
    // `--webdav-listen`: the same core served to other devices.
    let webdav = if s.webdav.listen.is_empty() {
        None
    } else {
        let poller = poller.clone();
        let kernel: crate::webdav::KernelHook = Arc::new(move |applied| {
            let poller = poller.clone();
            Box::pin(async move {
                poller.kernel().invalidate(&applied).await;
            })
        });
        match rt.block_on(crate::webdav::start(core.clone(), &s.webdav, Some(kernel))) {
            Ok(server) => Some(server),
            Err(e) => {
                daemon::report_failure(&e);
                return Err(e);
            }
        }
    };
    // `status` and `sync` talk to this; the mount works without it. Dropped (socket removed)
    // once the mount has ended and its uploads drained.
    let _control = rt
        .block_on(async {
            crate::control::server::start(
                core.clone(),
                client.clone(),
                poller.clone(),
                &mountpoint,
                webdav.as_ref().map(|w| w.url()),
            )
        })
        .inspect_err(|e| {
            tracing::warn!("no control socket (status and sync will not see this mount): {e}")
        })
        .ok();
    let result = mount::serve(&rt, core, &mountpoint, &s, &poller, webdav.as_ref(), || {
        notify::ready();
        daemon::report_ready();
    });
    if let Err(e) = &result {
        daemon::report_failure(e);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn demo_emulator() -> Result<crate::emulator::Emulator> {
    let data = std::env::temp_dir().join(format!("alipanfs-demo-data-{}", std::process::id()));
    let cfg = crate::emulator::EmulatorConfig {
        data_dir: data,
        ..Default::default()
    };
    let emulator =
        crate::emulator::Emulator::start("127.0.0.1:0".parse().expect("literal address"), cfg)
            .await?;
    emulator.seed_demo_tree();
    Ok(emulator)
}

fn run_emulator(args: EmulatorArgs) -> Result<()> {
    use crate::emulator::{EmulatorConfig, Faults};
    let persist = args.data.is_some();
    let data_dir = match args.data {
        Some(dir) => dir,
        None => tempfile::Builder::new()
            .prefix("alipanfs-emulator-")
            .tempdir()?
            .keep(),
    };
    let cfg = EmulatorConfig {
        data_dir,
        persist,
        refresh_token: args.refresh_token,
        access_token_ttl: Duration::from_secs(args.access_token_ttl),
        download_url_ttl_cap: Duration::from_secs(args.download_url_ttl),
        upload_url_ttl: Duration::from_secs(args.upload_url_ttl),
        upload_ttl: args
            .upload_ttl
            .map_or(crate::emulator::DEFAULT_UPLOAD_TTL, Duration::from_secs),
        rate_list_per_sec: args.list_rate,
        rate_download_url_per_sec: args.download_url_rate,
        rate_other_per_sec: args.api_rate,
        max_concurrent_downloads: args.max_downloads,
        quota_bytes: args.quota,
        transcode_time: Duration::try_from_secs_f64(args.transcode_time).map_err(|_| {
            Error::Config("--transcode-time must be a number of seconds ≥ 0".into())
        })?,
        faults: Faults {
            failure_rate: args.failure_rate,
            latency: Duration::from_millis(args.latency_ms),
            bandwidth_per_conn: args.bandwidth,
            link_bandwidth: args.link_bandwidth,
            upload_bandwidth: args.upload_bandwidth,
            ..Faults::default()
        },
        delta_feed: args.delta_feed,
        ..EmulatorConfig::default()
    };
    runtime()?.block_on(crate::emulator::run_cli(args.listen, cfg, args.seed_demo))
}

fn run_about(args: AboutArgs) -> Result<()> {
    let s = settings(args.options, &[], args.config)?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = crate::api::Client::new(mount::client_config(&s))?;
        let info = client.init().await?;
        let space = crate::drive::Drive::space_info(&client).await?;
        let status = client.token_status();
        let size = crate::units::bytes;
        println!("user:        {} ({})", info.user_name, info.user_id);
        println!("drive:       {:?} (drive_id {})", s.drive, info.drive_id);
        println!(
            "space:       {} used of {} ({} free)",
            size(space.used_bytes),
            size(space.total_bytes),
            size(space.total_bytes.saturating_sub(space.used_bytes))
        );
        println!("token store: {}", status.store_path.display());
        let meta = crate::meta::MetaStore::summary(&s.cache_dir, &info.user_id, &info.drive_id);
        println!(
            "metadata:    {} ({} folder listings, {} download URLs)",
            meta.dir.display(),
            meta.folders,
            meta.urls
        );
        match status.last_rotation {
            Some(t) => {
                let age = t.elapsed().unwrap_or_default().as_secs();
                println!(
                    "token age:   rotated {}h{:02}m ago",
                    age / 3600,
                    age % 3600 / 60
                );
            }
            None => println!("token age:   unknown"),
        }
        let ns_dir = s
            .cache_dir
            .join("data")
            .join(crate::cache::namespace(&info.user_id, &info.drive_id));
        let saved = crate::cache::SavedStats::load(&ns_dir);
        let line = crate::control::client::cache_line(&crate::cache::CacheStatus {
            dir: ns_dir.display().to_string(),
            limit: s.cache_size,
            used: crate::cache::disk_usage(&ns_dir),
            files: std::fs::read_dir(&ns_dir).map_or(0, |d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
                    .count() as u64
            }),
            blocks: 0,
            hit_blocks: saved.hit_blocks,
            miss_blocks: saved.miss_blocks,
            passthrough_opens: saved.passthrough_opens,
            skipped_bytes: 0,
        });
        println!("{}", line.replacen("cache: ", "cache:       ", 1));
        println!("passthrough: {:?}", s.passthrough);
        Ok(())
    })
}
