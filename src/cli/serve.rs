//! What `mount` and `serve webdav` share: from settings to a running fs core (sign-in, drive,
//! root check, caches, free space); and `alipanfs serve webdav`, the core without FUSE.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::api::Client;
use crate::cli::options::{MountOptions, Settings};
use crate::cli::{daemon, mount, notify};
use crate::drive::Drive;
use crate::error::Result;
use crate::fs::FsCore;

/// A signed-in drive and the fs core over it.
pub struct Opened {
    pub client: Arc<Client>,
    pub drive: Arc<dyn Drive>,
    pub core: Arc<FsCore>,
}

/// Sign in, open the drive, check the root folder, build the core, and read the free space
/// (so a write past the quota gets ENOSPC at once, not an upload retried for ever). Failures
/// are reported to a waiting parent (daemon mode) before they are returned.
pub fn open_core(rt: &tokio::runtime::Runtime, s: &Settings) -> Result<Opened> {
    match crate::platform::raise_fd_limit() {
        Ok(n) if n < 4096 => warn!(
            "at most {n} files can be open (the hard limit, ulimit -Hn): files waiting for their upload hold one each, so a copy of more files than that fails with 'Too many open files' until uploads catch up; raise it (LimitNOFILE= in the unit)"
        ),
        Ok(n) => debug!("open files limit: {n}"),
        Err(e) => warn!("could not raise the open files limit: {e}"),
    }
    let opened = rt.block_on(async {
        let client = mount::connect(s).await?;
        let (drive, info) = mount::open_drive(&client, s).await?;
        mount::check_root_folder(drive.as_ref(), &s.root_folder_id).await?;
        Ok((client, drive, info))
    });
    let (client, drive, info) = opened.inspect_err(daemon::report_failure)?;
    let namespace = crate::cache::namespace(&info.user_id, &info.drive_id);
    let cache = mount::open_data_cache(s, &namespace);
    let meta = mount::open_meta(s, &info);
    // Inside the runtime: the upload queue starts its tasks.
    let core = rt.block_on(async { mount::build_core(drive.clone(), s, meta, cache) })?;
    let space =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), core.statfs()).await });
    match space {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => warn!(
            "could not read the drive's free space; writes are checked against it once known: {e}"
        ),
        Err(_) => warn!(
            "the drive's free space did not come within 10 s; writes are checked against it once known"
        ),
    }
    Ok(Opened {
        client,
        drive,
        core,
    })
}

#[derive(Debug, clap::Args)]
pub struct ServeWebdavArgs {
    /// Address to listen on; anything but loopback needs --user [default: 127.0.0.1:8080].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
    /// The user clients sign in as (HTTP Basic); same as --webdav-user.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// File with the password on its first line, mode 600; same as --webdav-password-file.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// PEM certificate (chain): serve HTTPS; same as --webdav-tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert; same as --webdav-tls-key.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Options as in fstab: -o ro,drive=resource (repeatable).
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub o: Vec<String>,
    /// TOML config file with the long option names as keys [default: $XDG_CONFIG_HOME/alipanfs/config.toml].
    #[arg(long, env = "ALIPANFS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: MountOptions,
}

/// The address `serve webdav` listens on unless told.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// `alipanfs serve webdav`: in the foreground until SIGINT/SIGTERM, then uploads drain as at
/// an unmount.
pub fn run_webdav(args: ServeWebdavArgs) -> Result<()> {
    let mut options = args.options;
    options.webdav_listen = args.addr.or(options.webdav_listen);
    options.webdav_user = args.user.or(options.webdav_user);
    options.webdav_password_file = args.password_file.or(options.webdav_password_file);
    options.webdav_tls_cert = args.tls_cert.or(options.webdav_tls_cert);
    options.webdav_tls_key = args.tls_key.or(options.webdav_tls_key);
    let mut s = super::settings(options, &args.o, args.config)?;
    if s.webdav.listen.is_empty() {
        s.webdav.listen = DEFAULT_ADDR.into();
    }
    let rt = super::runtime()?;
    let Opened {
        client,
        drive,
        core,
    } = open_core(&rt, &s)?;
    let result = rt.block_on(async {
        let _poller = mount::start_poller(&core, drive, &s, Path::new("")).await;
        mount::start_metrics(&s, client.clone(), &core).await?;
        let server = crate::webdav::start(core.clone(), &s.webdav, None).await?;
        println!("serving WebDAV at {}", server.url());
        notify::ready();
        let signal = notify::termination().await;
        info!(%signal, "stopping the WebDAV server");
        notify::stopping();
        server.stop();
        let pending = core.uploads().drain(s.upload_drain_timeout).await;
        if pending > 0 {
            error!(
                pending,
                staging = %s.cache_dir.join("staging").display(),
                "uploads still pending at exit; their staged files are kept and the next start resumes them"
            );
        }
        Ok(())
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}
