//! Reader and handle behaviour against the in-memory test drive.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use proptest::prelude::*;

use super::testdrive::{byte, expected, Inject, TestDrive};
use super::{ReadConfig, ReadHandle, Reader};
use crate::drive::DownloadUrl;
use crate::error::Error;

const KB: u64 = 1024;
const MB: u64 = 1024 * 1024;

fn cfg() -> ReadConfig {
    ReadConfig {
        initial_window: 256 * KB,
        max_read_ahead: 4 * MB,
        memory_limit: 64 * MB,
        max_concurrent_downloads: 3,
        request_size: MB,
        url_renew_margin: Duration::from_secs(60),
    }
}

fn setup(drive: TestDrive, cfg: ReadConfig) -> (Arc<TestDrive>, Arc<Reader>) {
    let drive = Arc::new(drive);
    let reader = Reader::new(drive.clone(), cfg);
    (drive, reader)
}

/// Waits (up to 5 s) until no download is on the wire: cancelled ones must stop.
async fn wait_no_downloads(d: &TestDrive) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while d.in_flight.load(SeqCst) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "downloads not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads the whole file in `chunk`-sized reads, checking every byte.
async fn read_all(h: &ReadHandle, id: &str, size: u64, chunk: u32) {
    let mut pos = 0;
    while pos < size {
        let got = h.read(pos, chunk).await.expect("read");
        assert_eq!(got.len() as u64, (size - pos).min(chunk as u64));
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, b)| *b == byte(id, pos + i as u64)),
            "wrong bytes at {pos}"
        );
        pos += got.len() as u64;
    }
    assert!(h.read(size, chunk).await.unwrap().is_empty());
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<ReadHandle>();
    check::<Reader>();
    fn send_fut<F: std::future::Future + Send>(_: F) {}
    let (_d, r) = setup(TestDrive::new(&[("f", 10)]), cfg());
    let h = r.open("f", 10, None);
    send_fut(h.read(0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_are_exact_and_windows_grow() {
    let size = 20 * MB + 123;
    let (d, r) = setup(TestDrive::new(&[("f", size)]), cfg());
    let h = r.open("f", size, None);
    read_all(&h, "f", size, 128 * KB as u32).await;
    let reads = size.div_ceil(128 * KB) as usize;
    let calls = d.range_calls.load(SeqCst);
    assert!(calls * 4 < reads, "{calls} GETs for {reads} reads");
    assert_eq!(d.url_calls.load(SeqCst), 1);
    assert_eq!(d.bytes_served.load(SeqCst), size, "nothing fetched twice");
    let mut reqs = d.requests.lock().unwrap().clone();
    reqs.sort();
    // Starts small, then full request_size pieces once the window has grown.
    assert!(reqs.iter().take(2).all(|(_, l)| *l <= 256 * KB), "{reqs:?}");
    eprintln!("{:?}", reqs.iter().map(|r| r.1 / KB).collect::<Vec<_>>());
    assert!(reqs.iter().all(|(_, l)| *l <= MB));
    assert!(reqs.iter().filter(|(_, l)| *l >= MB / 2).count() >= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reader_downloads_in_parallel_and_reads_do_not_wait_for_the_window() {
    let size = 8 * MB;
    let mut td = TestDrive::new(&[("f", size)]);
    // A slow connection: 1 MiB takes 200 ms.
    td.per_mib = Duration::from_millis(200);
    let (d, r) = setup(
        td,
        ReadConfig {
            initial_window: MB,
            ..cfg()
        },
    );
    let h = r.open("f", size, None);
    let t = std::time::Instant::now();
    h.read(0, 4096).await.unwrap();
    // The 4 KiB came back while the 1 MiB read-ahead was still on the wire.
    assert!(
        t.elapsed() < Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(d.in_flight.load(SeqCst), 1);
    let mut pos = 4096;
    while pos < size {
        let got = h.read(pos, 128 * KB as u32).await.unwrap();
        assert_eq!(&got[..], &expected("f", pos, 128 * KB, size)[..]);
        pos += got.len() as u64;
    }
    // The grown window was fetched as several GETs at once, on every slot the server allows.
    assert_eq!(d.max_in_flight.load(SeqCst), 3);
    assert_eq!(d.busy_errors.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_preempts_another_handles_read_ahead() {
    let size = 64 * MB;
    let mut td = TestDrive::new(&[("a", size), ("b", size)]);
    // Very slow connections: one 4 MiB piece of `a` takes 4 s.
    td.per_mib = Duration::from_secs(1);
    let (d, r) = setup(
        td,
        ReadConfig {
            initial_window: 16 * MB,
            max_read_ahead: 16 * MB,
            request_size: 4 * MB,
            ..cfg()
        },
    );
    let a = r.open("a", size, None);
    // `a`'s first read is small; its read-ahead then holds every slot for seconds.
    let a_read = tokio::spawn(async move {
        let got = a.read(0, 4096).await.unwrap();
        assert_eq!(&got[..], &expected("a", 0, 4096, size)[..]);
        a
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while d.in_flight.load(SeqCst) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a never filled the slots"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // `b` reads 4 KiB somewhere in the middle (no read-ahead): it must not wait for `a`'s
    // pieces (seconds), only for one of them to be cancelled.
    let b = r.open("b", size, None);
    let t = std::time::Instant::now();
    let got = b.read(5 * MB + 3, 4096).await.unwrap();
    let took = t.elapsed();
    assert_eq!(&got[..], &expected("b", 5 * MB + 3, 4096, size)[..]);
    assert!(took < Duration::from_millis(500), "b waited {took:?}");
    assert!(d.max_in_flight.load(SeqCst) <= 3);
    assert_eq!(d.busy_errors.load(SeqCst), 0);
    // `a`'s own read (a demand piece) was never the one cancelled; its read-ahead carries on.
    let a = a_read.await.unwrap();
    drop(a);
    drop(b);
    wait_no_downloads(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_fetch_only_what_they_ask() {
    let size = 64 * MB;
    let (d, r) = setup(TestDrive::new(&[("f", size)]), cfg());
    let h = r.open("f", size, None);
    let mut asked = 0;
    for i in 0..200u64 {
        let offset = (i * 7_919_999 + 12_345) % size;
        let len = (4 * KB + (i * 977) % (60 * KB)) as u32;
        let got = h.read(offset, len).await.unwrap();
        assert_eq!(&got[..], &expected("f", offset, len as u64, size)[..]);
        asked += got.len() as u64;
    }
    let served = d.bytes_served.load(SeqCst);
    assert!(
        served <= asked + 2 * cfg().initial_window,
        "{served} for {asked}"
    );
    assert_eq!(d.url_calls.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_download_url_for_many_handles() {
    let size = 3 * MB;
    let mut td = TestDrive::new(&[("f", size)]);
    td.latency = Duration::from_millis(2);
    let (d, r) = setup(td, cfg());
    let handles: Vec<_> = (0..8).map(|_| r.open("f", size, None)).collect();
    join_all(
        handles
            .iter()
            .map(|h| read_all(h, "f", size, 64 * KB as u32)),
    )
    .await;
    assert_eq!(d.url_calls.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_spanning_an_expiry_never_fail() {
    let size = 8 * MB;
    let (d, r) = setup(TestDrive::new(&[("f", size)]), cfg());
    let h = r.open("f", size, None);
    let mut pos = 0;
    while pos < size {
        if pos % MB == 0 {
            d.expire_all();
        }
        let got = h
            .read(pos, 64 * KB as u32)
            .await
            .expect("read across expiry");
        assert_eq!(&got[..], &expected("f", pos, 64 * KB, size)[..]);
        pos += got.len() as u64;
    }
    assert!(d.expired_errors.load(SeqCst) >= 1);
    let urls = d.url_calls.load(SeqCst);
    let expired = d.expired_errors.load(SeqCst);
    assert!(
        urls >= 2 && urls <= 1 + expired,
        "{urls} URLs, {expired} expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_renewal_is_single_flight() {
    let size = 32 * MB;
    let mut td = TestDrive::new(&[("f", size)]);
    td.latency = Duration::from_millis(2);
    let (d, r) = setup(td, cfg());
    let handles: Vec<_> = (0..8).map(|_| r.open("f", size, None)).collect();
    handles[0].read(0, 10).await.unwrap();
    for round in 1..=3u64 {
        d.expire_all();
        // Far seeks: every handle downloads with the now expired URL at about the same time.
        let reads = handles.iter().enumerate().map(|(i, h)| {
            let offset = (i as u64 * 4 + round) * MB - 1000 * round;
            async move {
                let got = h.read(offset, 10_000).await.expect("read after expiry");
                assert_eq!(&got[..], &expected("f", offset, 10_000, size)[..]);
            }
        });
        join_all(reads).await;
        assert_eq!(d.url_calls.load(SeqCst) as u64, 1 + round);
    }
    assert!(d.expired_errors.load(SeqCst) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_renewed_before_they_expire() {
    let size = 4 * MB;
    let mut td = TestDrive::new(&[("f", size)]);
    // Shorter than twice the margin: renewed at half-life, 200 ms.
    td.url_ttl = Duration::from_millis(400);
    let (d, r) = setup(td, cfg());
    let h = r.open("f", size, None);
    h.read(0, 4096).await.unwrap();
    h.read(2 * MB, 4096).await.unwrap();
    assert_eq!(d.url_calls.load(SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    h.read(3 * MB, 4096).await.unwrap();
    assert_eq!(d.url_calls.load(SeqCst), 2);
    assert_eq!(d.expired_errors.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_file_drops_the_url() {
    let (d, r) = setup(TestDrive::new(&[("f", MB)]), cfg());
    r.open("f", MB, None).read(0, 10).await.unwrap();
    r.open("f", MB, None).read(0, 10).await.unwrap();
    assert_eq!(d.url_calls.load(SeqCst), 1);
    r.forget_file("f");
    r.open("f", MB, None).read(0, 10).await.unwrap();
    assert_eq!(d.url_calls.load(SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_readers_never_exceed_the_download_cap() {
    let size = 6 * MB;
    let ids: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
    let files: Vec<(&str, u64)> = ids.iter().map(|i| (i.as_str(), size)).collect();
    let mut td = TestDrive::new(&files);
    td.latency = Duration::from_millis(3);
    let (d, r) = setup(td, cfg());
    let handles: Vec<_> = ids.iter().map(|i| (i, r.open(i, size, None))).collect();
    join_all(
        handles
            .iter()
            .map(|(i, h)| read_all(h, i, size, 128 * KB as u32)),
    )
    .await;
    assert!(d.max_in_flight.load(SeqCst) <= 3);
    assert!(d.max_in_flight.load(SeqCst) >= 2, "downloads overlap");
    assert_eq!(d.busy_errors.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_busy_and_transient_errors_are_retried() {
    let (d, r) = setup(TestDrive::new(&[("f", MB)]), cfg());
    d.inject(&[
        Inject::Busy,
        Inject::Network,
        Inject::Busy,
        Inject::Expired,
        Inject::Network,
    ]);
    let h = r.open("f", MB, None);
    read_all(&h, "f", MB, 100_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_errors_surface_typed() {
    let (d, r) = setup(TestDrive::new(&[("f", MB)]), cfg());
    // Random-mode read (not at 0): one GET, so the injected errors hit this read.
    // A refused URL is retried once with a fresh one (it may be a listing's stale hint), so
    // the error surfaces when the fresh URL is refused too.
    d.inject(&[Inject::NotFound, Inject::NotFound]);
    let e = r.open("f", MB, None).read(5000, 10).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    d.inject(&[Inject::Network; 12]);
    let e = r.open("f", MB, None).read(7000, 10).await.unwrap_err();
    assert!(matches!(e, Error::Network(_)), "{e}");
    // Unknown file: getDownloadUrl's NotFound.
    let e = r.open("nope", MB, None).read(0, 10).await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e}");
    // And the drive is usable again afterwards.
    d.inject(&[]);
    assert_eq!(r.open("f", MB, None).read(0, 10).await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_under_the_global_budget() {
    let size = 8 * MB;
    let ids: Vec<String> = (0..4).map(|i| format!("m{i}")).collect();
    let files: Vec<(&str, u64)> = ids.iter().map(|i| (i.as_str(), size)).collect();
    let mut td = TestDrive::new(&files);
    td.latency = Duration::from_millis(1);
    let c = ReadConfig {
        memory_limit: 3 * MB,
        max_read_ahead: 2 * MB,
        request_size: 512 * KB,
        ..cfg()
    };
    let limit = c.memory_limit;
    let (_d, r) = setup(td, c);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (r, done) = (r.clone(), done.clone());
        tokio::spawn(async move {
            let mut max = 0;
            while !done.load(SeqCst) {
                max = max.max(r.memory_in_use());
                tokio::task::yield_now().await;
            }
            max
        })
    };
    let handles: Vec<_> = ids.iter().map(|i| (i, r.open(i, size, None))).collect();
    join_all(
        handles
            .iter()
            .map(|(i, h)| read_all(h, i, size, 128 * KB as u32)),
    )
    .await;
    done.store(true, SeqCst);
    let max = sampler.await.unwrap();
    assert!(max <= limit, "{max} > {limit}");
    assert!(max > 0);
    drop(handles);
    assert_eq!(r.memory_in_use(), 0, "dropped handles return their memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_reads_progress_when_the_budget_is_full() {
    let size = 4 * MB;
    let c = ReadConfig {
        memory_limit: 512 * KB,
        ..cfg()
    };
    let (_d, r) = setup(TestDrive::new(&[("a", size), ("b", size)]), c);
    let a = r.open("a", size, None);
    // `a` grabs the budget with read-ahead and keeps it (the handle stays open, unread).
    a.read(0, 4096).await.unwrap();
    a.read(4096, 4096).await.unwrap();
    assert!(r.memory_in_use() > 256 * KB);
    let b = r.open("b", size, None);
    read_all(&b, "b", size, 128 * KB as u32).await;
    assert!(r.memory_in_use() <= 512 * KB);
    // And with no budget at all, reads still work.
    let (_d, r0) = setup(
        TestDrive::new(&[("z", MB)]),
        ReadConfig {
            memory_limit: 0,
            ..cfg()
        },
    );
    read_all(&r0.open("z", MB, None), "z", MB, 50_000).await;
    assert_eq!(r0.memory_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_handles_give_their_read_ahead_to_active_ones() {
    let size = 8 * MB;
    let c = ReadConfig {
        memory_limit: 2 * MB,
        max_read_ahead: 2 * MB,
        ..cfg()
    };
    let (d, r) = setup(TestDrive::new(&[("a", size), ("b", size)]), c);
    let a = r.open("a", size, None);
    let mut pos = 0;
    while pos < 3 * MB {
        pos += a.read(pos, 128 * KB as u32).await.unwrap().len() as u64;
    }
    let held = r.memory_in_use();
    assert!(held > MB, "a holds {held}");
    // While `a` is active, `b` gets only what is left; once `a` is idle, `b` takes its budget.
    tokio::time::sleep(super::IDLE_AFTER + Duration::from_millis(20)).await;
    d.requests.lock().unwrap().clear();
    let b = r.open("b", size, None);
    read_all(&b, "b", size, 128 * KB as u32).await;
    let big = d
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| *l > 128 * KB)
        .count();
    assert!(big >= 4, "b read ahead ({big} large GETs)");
    // `a` still reads correctly after losing its buffer.
    let got = a.read(pos, 100_000).await.unwrap();
    assert_eq!(&got[..], &expected("a", pos, 100_000, size)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_handle_cancels_its_downloads() {
    let size = 16 * MB;
    let mut td = TestDrive::new(&[("f", size)]);
    td.latency = Duration::from_secs(30);
    let (d, r) = setup(td, cfg());
    let h = r.open("f", size, None);
    // The read gives up (as on an interrupted FUSE request); its downloads keep going...
    assert!(
        tokio::time::timeout(Duration::from_millis(50), h.read(0, 4096))
            .await
            .is_err()
    );
    assert!(
        d.in_flight.load(SeqCst) >= 2,
        "demand + read-ahead in flight"
    );
    assert!(r.memory_in_use() > 0);
    // ...until the handle goes.
    drop(h);
    assert_eq!(r.memory_in_use(), 0);
    wait_no_downloads(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eof_and_clamping() {
    let (_d, r) = setup(TestDrive::new(&[("f", 1000)]), cfg());
    let h = r.open("f", 1000, None);
    assert!(h.read(1000, 10).await.unwrap().is_empty());
    assert!(h.read(u64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(
        &h.read(990, 100).await.unwrap()[..],
        &expected("f", 990, 10, 1000)[..]
    );
    assert!(h.read(0, 0).await.unwrap().is_empty());
    let empty = r.open("f", 0, None);
    assert!(empty.read(0, 10).await.unwrap().is_empty());
    // The file shrank remotely after the size was learnt: short reads, no panic.
    let stale = r.open("f", 5000, None);
    let got = stale.read(0, 4000).await.unwrap();
    assert_eq!(&got[..], &expected("f", 0, 4000, 1000)[..]);
    assert!(stale.read(2000, 100).await.unwrap().is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Next(u32),
    Seek(u64, u32),
    Skip(u64, u32),
    Back(u64, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..40_000u32).prop_map(Op::Next),
        1 => (0..3 * MB, 1..40_000u32).prop_map(|(o, l)| Op::Seek(o, l)),
        1 => (1..80 * KB, 1..40_000u32).prop_map(|(s, l)| Op::Skip(s, l)),
        1 => (1..80 * KB, 1..40_000u32).prop_map(|(s, l)| Op::Back(s, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Mixed reads through the whole engine: exact bytes, budget never exceeded.
    #[test]
    fn mixed_reads_are_exact(
        size in 1..3 * MB,
        limit in prop_oneof![Just(0u64), 0..MB, Just(64 * MB)],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let c = ReadConfig {
                initial_window: 16 * KB,
                max_read_ahead: 256 * KB,
                memory_limit: limit,
                request_size: 64 * KB,
                ..cfg()
            };
            let (_d, r) = setup(TestDrive::new(&[("p", size)]), c);
            let h = r.open("p", size, None);
            let mut pos = 0u64;
            for op in ops {
                let (offset, len) = match op {
                    Op::Next(l) => (pos, l),
                    Op::Seek(o, l) => (o, l),
                    Op::Skip(s, l) => (pos + s, l),
                    Op::Back(s, l) => (pos.saturating_sub(s), l),
                };
                let got = h.read(offset, len).await.unwrap();
                prop_assert_eq!(&got[..], &expected("p", offset, len as u64, size)[..]);
                prop_assert!(r.memory_in_use() <= limit);
                pos = offset + got.len() as u64;
            }
            drop(h);
            prop_assert_eq!(r.memory_in_use(), 0);
            Ok(())
        })?;
    }
}

/// A listing offers one URL per small file. Offering 20,000 fresh ones keeps them all (each
/// still saves a getDownloadUrl), with a logarithmic number of sweeps: sweeping the whole map at
/// every insertion past 1,024 made listing a folder of 10k small files quadratic.
#[tokio::test]
async fn offered_urls_are_kept_without_sweeping_at_every_insertion() {
    let (d, r) = setup(TestDrive::new(&[("f00007", MB)]), cfg());
    let fresh = SystemTime::now() + Duration::from_secs(3600);
    // The test drive's own URL form, so the offered URL of f00007 can serve a read.
    let offer = |files: std::ops::Range<u32>| {
        for i in files {
            let id = format!("f{i:05}");
            let url = format!("http://test/{id}?gen=0&x-oss-signature=secret");
            r.offer_url(
                &id,
                DownloadUrl {
                    url,
                    expires_at: fresh,
                },
            );
        }
    };
    offer(0..20_000);
    let calls = d.url_calls.load(SeqCst);
    let (held, sweeps) = r.fetcher.urls.stats();
    assert_eq!(held, 20_000);
    assert!(sweeps <= 6, "{sweeps} sweeps");
    r.open("f00007", MB, None).read(0, 10).await.unwrap();
    assert_eq!(d.url_calls.load(SeqCst), calls, "the offered URL was used");
    // Past the hard cap, URLs nobody is using are dropped.
    offer(20_000..40_000);
    let (held, sweeps) = r.fetcher.urls.stats();
    assert!(held < 32 * 1024, "{held} held");
    // Doubling to the cap, one sweep that empties it, doubling again: still logarithmic.
    assert!(sweeps <= 12, "{sweeps} sweeps");
}

/// A media scanner reads a file's head, then its tail, then closes: the read-ahead under way
/// at the seek and the close still lands in the data cache, so the next scan asks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_under_way_at_a_seek_or_close_still_reaches_the_cache() {
    let size = 8 * MB;
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::cache::DataCache::open(dir.path(), "u-d", 1 << 30)
        .unwrap()
        .unwrap();
    let mut td = TestDrive::new(&[("f", size)]);
    // The read-ahead's larger requests are still on the wire when the head read returns.
    td.latency = Duration::from_millis(20);
    td.per_mib = Duration::from_millis(100);
    let d = Arc::new(td);
    let cfg = ReadConfig {
        initial_window: 4 * MB,
        request_size: 4 * MB,
        ..cfg()
    };
    let r = Reader::with_cache(d.clone(), cfg, Some(cache.clone()));
    let scan = |h: ReadHandle| async move {
        let head = h.read(0, 64 * KB as u32).await.unwrap();
        assert_eq!(&head[..], &expected("f", 0, 64 * KB, size)[..]);
        let tail = h.read(size - 64 * KB, 64 * KB as u32).await.unwrap();
        assert_eq!(&tail[..], &expected("f", size - 64 * KB, 64 * KB, size)[..]);
    };
    scan(r.open("f", size, Some("sha1:f"))).await;
    wait_no_downloads(&d).await;
    cache.flush();
    let gets = d.range_calls.load(SeqCst);
    // The head block, the read-ahead's 4 MiB past the head read (blocks 1-4), the tail block.
    assert_eq!(cache.file("f", "sha1:f", size).cached_blocks(), 6);
    scan(r.open("f", size, Some("sha1:f"))).await;
    wait_no_downloads(&d).await;
    assert_eq!(
        d.range_calls.load(SeqCst),
        gets,
        "the second scan downloaded"
    );
}

/// A fully cached file is read from the cache file alone: no download and no read-ahead held
/// in memory; once a block is gone it is fetched again like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_cached_file_is_read_without_read_ahead() {
    let size = 6 * MB + 100;
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::cache::DataCache::open(dir.path(), "u-d", 1 << 30)
        .unwrap()
        .unwrap();
    let d = Arc::new(TestDrive::new(&[("f", size)]));
    let r = Reader::with_cache(d.clone(), cfg(), Some(cache.clone()));
    read_all(&r.open("f", size, Some("sha1:f")), "f", size, 128 * 1024).await;
    wait_no_downloads(&d).await;
    cache.flush();
    assert!(cache.file("f", "sha1:f", size).is_complete());
    let gets = d.range_calls.load(SeqCst);
    let h = r.open("f", size, Some("sha1:f"));
    read_all(&h, "f", size, 128 * 1024).await;
    assert_eq!(
        d.range_calls.load(SeqCst),
        gets,
        "a cached file was downloaded"
    );
    assert_eq!(r.memory_in_use(), 0, "read-ahead of cached bytes");
}
