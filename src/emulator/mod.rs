//! An offline emulator of the Aliyundrive Open API (OAuth, `/adrive/v1.0/...`, and the OSS-like
//! data host for downloads and part uploads), served on 127.0.0.1 with axum.
//!
//! It is written from `/work/shared/aliyundrive-open-api.md` and shares nothing with the client
//! except `crate::hashing` and `crate::timefmt`. Behaviour and every decision on the reference's
//! open questions are in `src/emulator/README.md`.
//!
//! State lives behind one `std::sync::Mutex` so synchronous tests can call the introspection
//! methods; no lock is ever held across an `.await`. With `EmulatorConfig::persist` it is also
//! saved to `data_dir/state.json` before every change is acknowledged (`persist.rs`).

mod admin;
mod auth;
mod changes;
mod data;
pub use data::DENIED_CONCURRENCY;
mod demo;
mod device;
mod errors;
mod files;
mod limits;
mod listing;
mod livp;
mod mapped;
mod persist;
mod qr;
mod search;
mod seed;
mod server;
mod state;
mod transcode;
mod tree;
mod upload;
mod util;

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use seed::pattern_bytes;
pub use transcode::{generate_ladder, SeedSubtitle, SeedTranscode, DEFAULT_TRANSCODE_TIME};
pub use tree::TreeEntry;

/// How long unfinished uploads live: the PDS CreateFile page the reference cites (section 5.10)
/// says 10 days; the Open API's own value is unconfirmed.
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(10 * 24 * 3600);

/// How the emulator behaves; `Default` carries the real service's values.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// File bodies live on disk here (content-addressed under `blobs/`).
    pub data_dir: PathBuf,
    /// Keep the whole drive state in `data_dir/state.json` and load it on start (off by default:
    /// snapshots cost a write per change, which the in-process test emulators do not need).
    pub persist: bool,
    /// First valid refresh token; `None` = generate one.
    pub refresh_token: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    pub access_token_ttl: Duration,
    /// The previous access token keeps working this long after a refresh.
    pub access_token_grace: Duration,
    /// `x-oss-expires = now + min(expire_sec or 900, 14400, cap)`.
    pub download_url_ttl_cap: Duration,
    pub upload_url_ttl: Duration,
    /// Unfinished upload sessions (and their parts) are dropped this long after create.
    pub upload_ttl: Duration,
    /// Token-bucket rates per (user, app); 0 = unlimited.
    pub rate_list_per_sec: f64,
    pub rate_download_url_per_sec: f64,
    pub rate_other_per_sec: f64,
    /// Per-user cap on data GETs whose body is still streaming; 0 = unlimited.
    pub max_concurrent_downloads: usize,
    pub quota_bytes: u64,
    pub faults: Faults,
    /// A part PUT carrying a Content-Type answers 403 SignatureDoesNotMatch.
    pub strict_content_type: bool,
    /// How long a video's full transcode takes after its first play-info request.
    pub transcode_time: Duration,
    /// Also serve on a second 127.0.0.1 port, standing for the internal upload host of
    /// `--internal-upload` (`Emulator::internal_url`); requests there count as `internal/...`.
    pub internal_endpoint: bool,
    /// Serve the unconfirmed delta feed (`openFile/list_delta`, `openFile/get_last_cursor`);
    /// off by default, as clients must work without it.
    pub delta_feed: bool,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            // Unique per config so two emulators never share (and garbage-collect) blobs.
            data_dir: std::env::temp_dir().join(format!(
                "alipanfs-emulator-{}-{}",
                std::process::id(),
                util::rand_hex(8, false)
            )),
            persist: false,
            refresh_token: None,
            client_id: "alipanfs-emulator-app".into(),
            client_secret: "alipanfs-emulator-secret".into(),
            access_token_ttl: Duration::from_secs(7200),
            access_token_grace: Duration::from_secs(300),
            download_url_ttl_cap: Duration::from_secs(14400),
            upload_url_ttl: Duration::from_secs(3600),
            upload_ttl: DEFAULT_UPLOAD_TTL,
            rate_list_per_sec: 4.0,
            rate_download_url_per_sec: 1.0,
            rate_other_per_sec: 15.0,
            max_concurrent_downloads: 3,
            quota_bytes: 6 << 40,
            faults: Faults::default(),
            strict_content_type: true,
            transcode_time: DEFAULT_TRANSCODE_TIME,
            internal_endpoint: false,
            delta_feed: false,
        }
    }
}

/// Fault injection, applied to API and data requests (not to `/__emulator/`).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Fraction of requests failing: half 500 (JSON or HTML), half a dropped connection.
    pub failure_rate: f64,
    /// Added to every request.
    pub latency: Duration,
    /// Bytes/s cap per data-GET response body.
    pub bandwidth_per_conn: Option<u64>,
    /// Bytes/s shared by all data-GET bodies at once: the user's link, which parallel
    /// connections cannot widen.
    pub link_bandwidth: Option<u64>,
    /// Fraction answering 502 with an HTML/XML gateway body.
    pub xml_error_rate: f64,
    /// Bytes/s cap on each part-upload (PUT) body, so tests can catch an upload in flight.
    pub upload_bandwidth: Option<u64>,
    /// Fraction of part PUTs failing like `failure_rate`'s (500 or a dropped connection), on
    /// top of it; API calls are spared, so an upload gets as far as its parts.
    pub put_failure_rate: f64,
}

/// A running emulator; dropping it stops the server like `shutdown`.
pub struct Emulator {
    shared: Arc<state::Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    // Present for `start_background`: the runtime thread to join on shutdown.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Emulator {
    /// Bind `listen` (port 0 is fine) and serve on the current tokio runtime.
    pub async fn start(listen: SocketAddr, cfg: EmulatorConfig) -> Result<Emulator> {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        // As a real server does: small responses on a kept-alive connection must not wait
        // ~40 ms for Nagle's algorithm (it made every later request of a connection slow).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let internal = if cfg.internal_endpoint {
            Some(tokio::net::TcpListener::bind((listen.ip(), 0)).await?)
        } else {
            None
        };
        let mut shared = state::Shared::new(cfg, addr)?;
        if let Some(l) = &internal {
            shared.internal_url = Some(format!("http://{}", l.local_addr()?));
        }
        let shared = Arc::new(shared);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (itx, irx) = tokio::sync::oneshot::channel::<()>();
        let app = server::router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
            let _ = itx.send(());
        });
        if let Some(l) = internal {
            let app = server::internal_router(shared.clone());
            tokio::spawn(async move {
                let _ = axum::serve(l, app)
                    .with_graceful_shutdown(async move {
                        let _ = irx.await;
                    })
                    .await;
            });
        }
        Ok(Emulator {
            shared,
            stop: Some(tx),
            thread: None,
        })
    }

    /// Start on 127.0.0.1:0 in a runtime of its own (for synchronous tests).
    pub fn start_background(cfg: EmulatorConfig) -> Result<Emulator> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("alipanfs-emulator".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Io(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
                    match Emulator::start(listen, cfg).await {
                        Ok(mut emu) => {
                            let stop = emu.stop.take();
                            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
                            let _ = ready_tx.send(Ok((emu.shared.clone(), stop_tx)));
                            let _ = stop_rx.await;
                            if let Some(s) = stop {
                                let _ = s.send(());
                            }
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        let (shared, stop) = ready_rx
            .recv()
            .map_err(|_| Error::Config("emulator thread died during start".into()))??;
        Ok(Emulator {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }
    pub fn api_url(&self) -> String {
        self.shared.base_url.clone()
    }
    /// The origin of the second listener (`EmulatorConfig::internal_endpoint`), for
    /// `--internal-upload-url`.
    pub fn internal_url(&self) -> Option<String> {
        self.shared.internal_url.clone()
    }
    pub fn token_helper_url(&self) -> String {
        format!("{}/alist/ali_open/token", self.shared.base_url)
    }
    /// The options that point `alipanfs mount` at this emulator with its app's credentials
    /// (the refresh token goes in the environment, as a user would pass it).
    pub fn mount_args(&self) -> Vec<String> {
        let st = self.shared.lock();
        vec![
            "--api-url".into(),
            self.shared.base_url.clone(),
            "--client-id".into(),
            st.knobs.client_id.clone(),
            "--client-secret".into(),
            st.knobs.client_secret.clone(),
        ]
    }
    /// The currently valid refresh token (the initial one until a refresh rotates it).
    pub fn refresh_token(&self) -> String {
        self.shared.lock().tokens.current_refresh.clone()
    }
    pub fn user_id(&self) -> String {
        self.shared.lock().user_id.clone()
    }
    /// `default`, `resource` or `backup`.
    pub fn drive_id(&self, which: &str) -> Option<String> {
        self.shared.lock().drive_of_kind(which)
    }
    pub fn call_count(&self, endpoint: &str) -> u64 {
        self.shared.lock().calls.get(endpoint).copied().unwrap_or(0)
    }
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.shared.lock().calls.clone()
    }
    pub fn reset_calls(&self) {
        let mut st = self.shared.lock();
        st.calls.clear();
        st.part_puts.clear();
    }
    /// PUTs that reached each part, keyed by (upload_id, part number), failed ones included.
    pub fn part_puts(&self) -> BTreeMap<(String, u32), u64> {
        self.shared.lock().part_puts.clone()
    }
    /// Every item including trashed ones (not pending uploads).
    pub fn tree(&self) -> Vec<TreeEntry> {
        self.shared.lock().tree()
    }
    /// The entries at `path` (`/a/b`; duplicates and trashed ones included): cheap to poll.
    pub fn entries_at(&self, path: &str) -> Vec<TreeEntry> {
        self.shared.lock().entries_at(path)
    }
    /// A change made as another device (the phone app, the web): `op` is one of `device.rs`'s
    /// (create, mkdir, overwrite, rename, move, trash, delete) with its JSON arguments.
    pub fn device(
        &self,
        op: &str,
        args: serde_json::Value,
    ) -> std::result::Result<serde_json::Value, String> {
        device::apply(&self.shared, op, &args)
    }
    /// Turns the delta feed (`openFile/list_delta`) on or off.
    pub fn set_delta_feed(&self, on: bool) {
        self.shared.lock().knobs.delta_feed = on;
    }
    /// A folder in the default drive; returns its file_id.
    pub fn seed_folder(&self, parent_file_id: &str, name: &str) -> String {
        self.shared.seed_folder(parent_file_id, name)
    }
    /// A file in the default drive; returns its file_id.
    pub fn seed_file(&self, parent_file_id: &str, name: &str, content: &[u8]) -> String {
        self.shared.seed_bytes(parent_file_id, name, content)
    }
    /// A file in the drive of `kind` (`default`, `resource` or `backup`; the default drive is
    /// the backup drive, as on the service); returns its file_id.
    pub fn seed_file_in(
        &self,
        kind: &str,
        parent_file_id: &str,
        name: &str,
        content: &[u8],
    ) -> String {
        self.shared
            .seed_bytes_in(kind, parent_file_id, name, content)
    }
    /// A folder in the drive of `kind`; returns its file_id.
    pub fn seed_folder_in(&self, kind: &str, parent_file_id: &str, name: &str) -> String {
        self.shared.seed_folder_in(kind, parent_file_id, name)
    }
    /// Test hook: the content of `file_id` changes to `content`, keeping its file_id (a change
    /// behind the mount's back that only the content hash, size and updated_at show).
    pub fn replace_content(&self, file_id: &str, content: &[u8]) {
        self.shared.replace_bytes(file_id, content)
    }
    /// A file whose content is `pattern_bytes(seed, ..)`, streamed to disk.
    pub fn seed_pattern_file(
        &self,
        parent_file_id: &str,
        name: &str,
        size: u64,
        seed: u64,
    ) -> String {
        self.shared.seed_pattern(parent_file_id, name, size, seed)
    }
    /// Set an item's `created_at` and `updated_at` (milliseconds since the epoch), as if it had
    /// been made and last changed then.
    pub fn set_times(&self, file_id: &str, created_ms: i64, updated_ms: i64) {
        {
            let mut st = self.shared.lock();
            let node = st.nodes.get_mut(file_id).expect("seeded item");
            node.created_ms = created_ms;
            node.updated_ms = updated_ms;
        }
        self.shared.save_now();
    }
    /// A video's transcodes (reference 3.9): `ladder` (each template's HLS playlist and
    /// segments, e.g. from `generate_ladder`) and `subtitles`, for a source of `width` x
    /// `height` lasting `duration_secs`. Play-info answers the templates no taller than the
    /// source. Until the first play-info request only the first 30 s are ready; that request
    /// starts the full transcode (`set_transcode_time`). Panics on a ladder it cannot read.
    pub fn seed_transcodes(
        &self,
        file_id: &str,
        duration_secs: f64,
        width: u32,
        height: u32,
        ladder: Vec<SeedTranscode>,
        subtitles: Vec<SeedSubtitle>,
    ) {
        let files = ladder
            .iter()
            .map(|t| {
                transcode::LadderFiles::read(t).unwrap_or_else(|e| {
                    panic!(
                        "seed_transcodes: {} in {}: {e}",
                        t.template_id,
                        t.dir.display()
                    )
                })
            })
            .collect();
        self.shared
            .seed_transcodes(file_id, duration_secs, width, height, files, subtitles)
    }
    /// How long a full transcode takes after a video's first play-info request (for
    /// transcodes started from now on).
    pub fn set_transcode_time(&self, d: Duration) {
        self.shared.lock().knobs.transcode_time = d;
    }
    /// getVideoPreviewPlayInfo requests answered for a video with transcodes.
    pub fn play_info_calls(&self, file_id: &str) -> u64 {
        let st = self.shared.lock();
        st.videos.get(file_id).map_or(0, |v| v.play_info_calls)
    }
    /// A `.livp` live photo (`name`, `.livp` added when missing) whose streams are `jpeg` and
    /// `mov`; returns its file_id.
    pub fn seed_livp(&self, parent_file_id: &str, name: &str, jpeg: &[u8], mov: &[u8]) -> String {
        self.shared.seed_livp(parent_file_id, name, jpeg, mov)
    }
    /// The sample tree of `alipanfs mount --demo`.
    pub fn seed_demo_tree(&self) {
        self.shared.seed_demo_tree()
    }
    pub fn set_faults(&self, f: Faults) {
        self.shared.lock().knobs.faults = f;
    }
    pub fn set_quota(&self, total_bytes: u64) {
        self.shared.lock().knobs.quota_bytes = total_bytes;
        self.shared.save_now();
    }
    /// The next `n` `/adrive/` API calls answer 429 TooManyRequests.
    pub fn force_429(&self, n: u32) {
        self.shared.lock().force_429 = n;
    }
    pub fn set_rate_limits(&self, list: f64, download_url: f64, other: f64) {
        let mut st = self.shared.lock();
        st.knobs.rate_list = list;
        st.knobs.rate_download_url = download_url;
        st.knobs.rate_other = other;
        st.buckets.clear();
    }
    pub fn set_download_url_ttl_cap(&self, d: Duration) {
        self.shared.lock().knobs.download_url_ttl_cap = d;
    }
    pub fn set_upload_url_ttl(&self, d: Duration) {
        self.shared.lock().knobs.upload_url_ttl = d;
    }
    pub fn set_access_token_ttl(&self, d: Duration) {
        self.shared.lock().knobs.access_token_ttl = d;
    }
    /// Uppercase SHA-1 of a completed file.
    pub fn file_sha1(&self, file_id: &str) -> Option<String> {
        let st = self.shared.lock();
        st.nodes
            .get(file_id)
            .filter(|n| !n.pending)
            .and_then(|n| n.sha1.clone())
    }
    /// A fresh single-use authorization code for the configured app (valid 10 minutes).
    pub fn issue_auth_code(&self) -> String {
        self.shared.lock().issue_code()
    }
    /// Plays the phone on the newest QR sign-in (`qr`): scan, confirm, deny or expire. False
    /// when there is no QR code yet.
    pub fn qr_action(&self, action: &str) -> bool {
        let r = self
            .shared
            .lock()
            .qr_admin(&serde_json::json!({ "action": action }));
        r.status().is_success()
    }
    /// Data GETs currently streaming.
    pub fn active_downloads(&self) -> usize {
        self.shared
            .active_downloads
            .load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Stop serving; waits for the background runtime, if any.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Stop serving so a failed test never leaves a server (or a runtime thread) behind.
        self.stop_now();
    }
}

/// Entry point of `alipanfs emulator`: prints the address and refresh token, runs until Ctrl-C.
pub async fn run_cli(listen: SocketAddr, cfg: EmulatorConfig, seed_demo: bool) -> Result<()> {
    let emu = Emulator::start(listen, cfg).await?;
    // A drive loaded from `--data` keeps its own tree.
    if seed_demo && emu.shared.lock().nodes.is_empty() {
        let shared = emu.shared.clone();
        tokio::task::spawn_blocking(move || shared.seed_demo_tree())
            .await
            .map_err(|e| Error::Config(format!("seeding the demo tree failed: {e}")))?;
    }
    println!("alipanfs emulator listening on {}", emu.api_url());
    println!("refresh token: {}", emu.refresh_token());
    println!("client id: {}", emu.shared.lock().knobs.client_id);
    println!("token helper: {}", emu.token_helper_url());
    tokio::signal::ctrl_c().await?;
    emu.shutdown();
    Ok(())
}
