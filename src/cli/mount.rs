//! `alipanfs mount`: check the mount point, sign in, build the layers, mount through FUSE, and
//! unmount cleanly on SIGINT/SIGTERM (after letting pending uploads finish, within a bound).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::api::retry::Backoff;
use crate::api::{Client, ClientConfig, RateLimits};
use crate::cache::DataCache;
use crate::cli::notify;
use crate::cli::options::Settings;
use crate::drive::multi::{Member, MultiDrive};
use crate::drive::{Drive, DriveChoice, DriveInfo};
use crate::error::{Error, Result};
use crate::fs::fuse::FuseAdapter;
use crate::fs::{FsConfig, FsCore};
use crate::meta::MetaStore;
use crate::platform::{self, is_mounted};
use crate::poll::{PollConfig, Poller};
use crate::read::{ReadConfig, Reader};
use crate::write::{Staging, UploadConfig, UploadQueue};

/// Refuse a mount point that would fail or hide something, with a sentence saying what to do.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Config(format!(
            "mount point {} does not exist: create it first (mkdir -p {})",
            path.display(),
            path.display()
        )),
        _ => Error::Config(format!("mount point {}: {e}", path.display())),
    })?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "mount point {} is not a directory",
            path.display()
        )));
    }
    let canonical = path.canonicalize()?;
    if is_mounted(&canonical) {
        return Err(Error::Config(format!(
            "{} is already a mount point: unmount it first ({} {})",
            canonical.display(),
            platform::UNMOUNT_COMMAND,
            canonical.display()
        )));
    }
    if std::fs::read_dir(&canonical)?.next().is_some() {
        return Err(Error::Config(format!(
            "mount point {} is not empty: the mount would hide its files; use an empty directory",
            canonical.display()
        )));
    }
    if let Some(why) = platform::fuse_unavailable() {
        return Err(Error::Config(why));
    }
    Ok(canonical)
}

pub fn client_config(s: &Settings) -> ClientConfig {
    let mut cfg = ClientConfig::new(s.token_file.clone());
    cfg.api_url = s.api_url.clone();
    cfg.token_url = s.token_url.clone();
    cfg.client_id = s.client_id.clone();
    cfg.client_secret = s.client_secret.clone();
    cfg.refresh_token = s.refresh_token.clone();
    cfg.drive = s.drive;
    cfg.upload_origin = s.upload_origin.clone();
    cfg.bwlimit_download = s.bwlimit_download;
    cfg.bwlimit_upload = s.bwlimit_upload;
    cfg.limits = RateLimits {
        list_per_sec: s.list_rate,
        download_url_per_sec: s.download_url_rate,
        other_per_sec: s.api_rate,
    };
    cfg
}

/// Sign in and pick the drive, retrying while the API is unreachable (boot before the network).
pub async fn connect(s: &Settings) -> Result<Arc<Client>> {
    let client = Arc::new(Client::new(client_config(s))?);
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    loop {
        match client.init().await {
            Ok(info) => {
                info!(user = %info.user_name, drive_id = %info.drive_id, "signed in");
                return Ok(client);
            }
            Err(e @ (Error::Network(_) | Error::TimedOut(_)))
                if started.elapsed() < s.startup_timeout =>
            {
                let delay = backoff.next_wait();
                warn!(error = %e, retry_in = ?delay, "drive API unreachable; retrying (is the network up?)");
                tokio::time::sleep(delay.min(s.startup_timeout.saturating_sub(started.elapsed())))
                    .await;
            }
            Err(e @ (Error::Network(_) | Error::TimedOut(_))) => {
                return Err(Error::Network(format!(
                    "cannot reach the drive API at {} (gave up after {:?}): {e}",
                    s.api_url, s.startup_timeout
                )))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The drive the mount shows and what describes it (cache namespaces, `status`): the chosen
/// drive, or with `--drive all` every drive of the account as a folder of the root, on views
/// of the one signed-in `client`.
pub async fn open_drive(client: &Arc<Client>, s: &Settings) -> Result<(Arc<dyn Drive>, DriveInfo)> {
    let info = client.init().await?;
    if s.drive != DriveChoice::All {
        return Ok((client.clone(), info));
    }
    let kinds = [
        ("resource", info.resource_drive_id.clone()),
        ("backup", info.backup_drive_id.clone()),
    ];
    let mut found: Vec<(&str, String)> = Vec::new();
    for (kind, id) in kinds {
        if let Some(id) = id.filter(|id| !found.iter().any(|(_, d)| d == id)) {
            found.push((kind, id));
        }
    }
    if found.is_empty() {
        found.push(("default", info.default_drive_id.clone()));
    }
    let folder = |kind: &str| {
        s.drive_names
            .iter()
            .find(|(k, _)| k == kind)
            .map_or_else(|| kind.to_string(), |(_, name)| name.clone())
    };
    let mut members = Vec::new();
    for (kind, id) in &found {
        let view: Arc<dyn Drive> = Arc::new(client.on_drive(id)?);
        members.push(Member {
            folder: folder(kind),
            drive: view,
        });
        info!(drive = kind, drive_id = %id, folder = %folder(kind), "drive shown as a folder");
    }
    let ids: Vec<&str> = found.iter().map(|(_, id)| id.as_str()).collect();
    let info = DriveInfo {
        drive_id: format!("all-{}", ids.join("-")),
        ..info
    };
    Ok((Arc::new(MultiDrive::new(members, info.clone())?), info))
}

/// `--root-folder-id` must name a folder the drive has: a wrong id is refused at mount time, in
/// one line naming the id, rather than a mount whose every listing fails.
pub async fn check_root_folder(drive: &dyn Drive, id: &str) -> Result<()> {
    if id == crate::drive::ROOT_ID {
        return Ok(());
    }
    match drive.get(id).await {
        Ok(item) if item.is_dir() => Ok(()),
        Ok(item) => Err(Error::Config(format!(
            "--root-folder-id {id} is a file ({}), not a folder",
            item.name
        ))),
        Err(Error::NotFound(_)) | Err(Error::InRecycleBin(_)) => Err(Error::Config(format!(
            "--root-folder-id {id} does not exist on the drive (no such folder)"
        ))),
        Err(e) => Err(e),
    }
}

/// The metadata store of the signed-in drive (listings and download URLs across remounts).
pub fn open_meta(s: &Settings, info: &DriveInfo) -> Option<Arc<MetaStore>> {
    MetaStore::open(
        &s.cache_dir,
        &info.user_id,
        &info.drive_id,
        s.dir_cache_ttl,
        ReadConfig::default().url_renew_margin,
    )
}

/// The data cache of the drive `namespace` names (`cache::namespace`), unless `--cache-size 0`
/// or another mount holds it (then the mount runs without it, as the log says).
pub fn open_data_cache(s: &Settings, namespace: &str) -> Option<Arc<DataCache>> {
    if s.cache_size == 0 {
        debug!("--cache-size 0: no data cache");
        return None;
    }
    DataCache::open(&s.cache_dir.join("data"), namespace, s.cache_size)
        .inspect_err(|e| {
            warn!(dir = %s.cache_dir.join("data").display(), "cannot open the data cache, running without it: {e}")
        })
        .ok()
        .flatten()
}

/// Everything below the FUSE adapter, built from the settings, reading through `cache`.
pub fn build_core(
    drive: Arc<dyn Drive>,
    s: &Settings,
    meta: Option<Arc<MetaStore>>,
    cache: Option<Arc<DataCache>>,
) -> Result<Arc<FsCore>> {
    let reader = Reader::with_cache(
        drive.clone(),
        ReadConfig {
            max_read_ahead: s.max_read_ahead,
            memory_limit: s.memory_limit,
            max_concurrent_downloads: s.max_downloads,
            ..ReadConfig::default()
        },
        cache,
    );
    if let Some(meta) = &meta {
        // URLs a previous mount asked for and still valid: no getDownloadUrl for those files.
        let urls = meta.take_urls();
        debug!(urls = urls.len(), "download URLs from the metadata store");
        for (file_id, url) in urls {
            reader.offer_url(&file_id, url);
        }
        let meta = meta.clone();
        reader.observe_urls(move |file_id, url| meta.remember_url(file_id, url));
    }
    let staging = Staging::new(s.cache_dir.join("staging"))?;
    let uploads = UploadQueue::new(
        drive.clone(),
        UploadConfig {
            part_size: s.part_size,
            delete_permanently: s.delete_permanently,
            upload_while_writing: s.upload_while_writing,
            rapid_upload: s.rapid_upload,
            ..UploadConfig::default()
        },
    );
    let cfg = FsConfig {
        root_file_id: s.root_folder_id.clone(),
        read_only: s.read_only,
        uid: s.uid,
        gid: s.gid,
        umask: s.umask,
        dir_cache_ttl: s.dir_cache_ttl,
        delete_permanently: s.delete_permanently,
        strict_permissions: s.strict_permissions,
        // Listings of up to half a million entries in all stay cached (50 times a 10,000-file folder).
        max_cached_entries: 500_000,
        order_by: s.order_by,
        order_direction: s.order_direction,
        meta,
        transcodes_dir: s.transcodes_dir.clone(),
        livp: s.livp,
    };
    Ok(FsCore::new(drive, cfg, reader, staging, uploads))
}

/// The poller of changes made on the drive elsewhere (polling only with `--poll-interval` not
/// 0; `refresh` either way); with polling, returns after the first poll (or a bound).
pub async fn start_poller(
    core: &Arc<FsCore>,
    drive: Arc<dyn Drive>,
    s: &Settings,
    mountpoint: &Path,
) -> Arc<Poller> {
    let position_file = core.config().meta.as_ref().map(|m| m.poll_position_file());
    Poller::start(
        core.clone(),
        drive,
        PollConfig {
            interval: s.poll_interval,
            on_change: s.on_change.clone(),
            mountpoint: mountpoint.to_path_buf(),
            position_file,
            // Listings stored before then have expired; a minute more for a slow last poll.
            resume_within: s.dir_cache_ttl + s.poll_interval * 2 + Duration::from_secs(60),
        },
    )
    .await
}

/// Start the Prometheus listener of `--metrics-listen` (nothing without it), on the runtime
/// this is called on. An address that cannot be bound fails the mount with one line naming it.
pub async fn start_metrics(
    s: &Settings,
    client: Arc<Client>,
    core: &FsCore,
) -> Result<Option<std::net::SocketAddr>> {
    match &s.metrics_listen {
        None => Ok(None),
        Some(addr) => crate::metrics::serve(addr, client, core.uploads().clone())
            .await
            .map(Some),
    }
}

fn fuse_config(s: &Settings) -> fuser::Config {
    use fuser::MountOption;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("alipanfs".into()),
        MountOption::Subtype("alipanfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        if s.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if s.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(platform::FUSE_THREADS);
    config.clone_fd = platform::FUSE_THREADS > 1;
    config
}

/// Mount and serve until SIGINT/SIGTERM or an external unmount. `ready` is called once the
/// mount point answers (systemd notification, daemon hand-off).
pub fn serve(
    rt: &tokio::runtime::Runtime,
    core: Arc<FsCore>,
    mountpoint: &Path,
    s: &Settings,
    poller: &Poller,
    webdav: Option<&crate::webdav::Server>,
    ready: impl FnOnce(),
) -> Result<()> {
    let passthrough = core.data_cache().is_some() && crate::fs::passthrough::allowed(s.passthrough);
    let adapter = FuseAdapter::new(
        core.clone(),
        rt.handle().clone(),
        s.attr_timeout,
        s.max_read_ahead.min(1 << 20) as u32,
        passthrough,
    );
    let session = fuser::Session::new(adapter, mountpoint, &fuse_config(s)).map_err(|e| {
        Error::Config(format!(
            "cannot mount {}: {e} (is fuse3 installed, /dev/fuse present and --allow-other allowed in /etc/fuse.conf?)",
            mountpoint.display()
        ))
    })?;
    poller.kernel().set(session.notifier());
    let background = session
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start the FUSE session: {e}")))?;

    rt.block_on(wait_until_answering(mountpoint));
    info!(mountpoint = %mountpoint.display(), "mounted");
    ready();

    let external_unmount = rt.block_on(async {
        let session_ended = async {
            // Someone ran `fusermount3 -u` / `umount`: the session thread ends by itself.
            while !background.guard.is_finished() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            signal = notify::termination() => {
                info!(%signal, "unmounting");
                false
            }
            _ = session_ended => {
                info!("unmounted from outside");
                true
            }
        }
    });
    notify::stopping();
    // No new WebDAV requests: what they would write could not be drained below.
    if let Some(server) = webdav {
        server.stop();
    }
    // Unmount first: the kernel then hands over what is still queued (the RELEASE of a file
    // closed just before the signal), so its upload is queued before we drain the queue.
    if !external_unmount {
        unmount(mountpoint);
    }
    rt.block_on(async {
        let deadline = Instant::now() + SESSION_END_WAIT;
        while !background.guard.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if !background.guard.is_finished() {
        warn!(
            "the FUSE session did not end {SESSION_END_WAIT:?} after the unmount; exiting anyway"
        );
    }
    let pending = rt.block_on(core.uploads().drain(s.upload_drain_timeout));
    if pending > 0 {
        error!(
            pending,
            staging = %s.cache_dir.join("staging").display(),
            "uploads still pending at unmount; their staged files are kept and the next mount resumes them"
        );
    }
    if let Some(meta) = &core.config().meta {
        if !meta.flush(META_FLUSH_WAIT) {
            warn!(
                "listings still being stored at unmount; the next mount lists those folders again"
            );
        }
    }
    if background.guard.is_finished() {
        if let Err(e) = background.join() {
            debug!(error = %e, "FUSE session ended with an error");
        }
    } else {
        // Its threads are blocked in the kernel; the process exit ends them.
        std::mem::forget(background);
    }
    Ok(())
}

/// How long the listings queued for the metadata store may take to be written at unmount.
const META_FLUSH_WAIT: Duration = Duration::from_secs(5);

/// How long the FUSE session may take to finish its queued requests after the unmount.
const SESSION_END_WAIT: Duration = Duration::from_secs(10);

/// Unmount our own mount point; lazily if busy.
fn unmount(mountpoint: &Path) {
    info!(mountpoint = %mountpoint.display(), "unmounting");
    if !platform::unmount(mountpoint) {
        warn!("unmount failed (busy?); detaching lazily");
        lazy_unmount(mountpoint);
    }
}

/// Wait until the kernel routes the mount point to us (its device differs from its parent's).
async fn wait_until_answering(mountpoint: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if is_mounted(mountpoint) {
            let path = mountpoint.to_path_buf();
            if tokio::task::spawn_blocking(move || std::fs::metadata(&path).is_ok())
                .await
                .unwrap_or(false)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!("the mount point did not answer within 30 s");
}

pub fn lazy_unmount(mountpoint: &Path) {
    if !platform::lazy_unmount(mountpoint) {
        error!(mountpoint = %mountpoint.display(), "could not unmount; run: {} {}", platform::UNMOUNT_COMMAND, mountpoint.display());
    }
}
