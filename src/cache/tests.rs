use super::*;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use store::{block_cost, FILE_COST};

fn pattern(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    crate::emulator::pattern_bytes(seed, offset, len)
}

fn open(dir: &Path, limit: u64) -> Arc<DataCache> {
    DataCache::open(dir, "u-d", limit).unwrap().unwrap()
}

/// Every block of `f` (seeded with `seed`) stored and flushed.
fn fill(cache: &DataCache, f: &CachedFile, seed: u64) {
    let size = f.size();
    let mut off = 0;
    while off < size {
        let n = (size - off).min(3 * BLOCK);
        f.store(off, Bytes::from(pattern(seed, off, n as usize)));
        cache.flush();
        off += n;
    }
}

fn read_all(f: &CachedFile) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for (_, b) in f.read(0, f.size()) {
        out.extend_from_slice(&b?);
    }
    Some(out)
}

#[test]
fn blocks_survive_a_reopen_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let size = 5 * BLOCK + 123;
    {
        let cache = open(dir.path(), 64 * BLOCK);
        let f = cache.file("f1", "sha1:AA", size);
        fill(&cache, &f, 1);
        assert_eq!(f.cached_blocks(), 6);
    }
    let cache = open(dir.path(), 64 * BLOCK);
    let f = cache.file("f1", "sha1:AA", size);
    assert_eq!(read_all(&f).unwrap(), pattern(1, 0, size as usize));
    // A range inside, crossing a block boundary.
    let got = f.read(BLOCK - 10, BLOCK + 20);
    assert_eq!(got.len(), 2);
    let joined: Vec<u8> = got.iter().flat_map(|(_, b)| b.clone().unwrap()).collect();
    assert_eq!(joined, pattern(1, BLOCK - 10, 30));
    // Sparse: the data file is as long as the drive file.
    let data = store::data_path(cache.dir(), f.key());
    assert_eq!(std::fs::metadata(data).unwrap().len(), size);
}

#[test]
fn a_torn_or_unrecorded_block_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let size = 3 * BLOCK;
    let key;
    {
        let cache = open(dir.path(), 64 * BLOCK);
        let f = cache.file("f1", "sha1:AA", size);
        // Only blocks 0 and 1.
        f.store(0, Bytes::from(pattern(1, 0, 2 * BLOCK as usize)));
        cache.flush();
        key = f.key().to_string();
    }
    let ns = dir.path().join("u-d");
    let data = std::fs::OpenOptions::new()
        .write(true)
        .open(store::data_path(&ns, &key))
        .unwrap();
    // Block 1 torn (half rewritten), block 2 written without its record (a kill -9 between).
    data.write_all_at(&vec![0u8; 4096], BLOCK + 100).unwrap();
    data.write_all_at(&pattern(1, 2 * BLOCK, BLOCK as usize), 2 * BLOCK)
        .unwrap();
    let cache = open(dir.path(), 64 * BLOCK);
    let f = cache.file("f1", "sha1:AA", size);
    let got = f.read(0, size);
    assert_eq!(
        got[0].1.as_deref(),
        Some(&pattern(1, 0, BLOCK as usize)[..])
    );
    assert!(got[1].1.is_none(), "torn block served");
    assert!(got[2].1.is_none(), "unrecorded block served");
    cache.flush();
    // The torn block was dropped: fetched and stored again, it is served right.
    assert_eq!(f.cached_blocks(), 1);
    f.store(BLOCK, Bytes::from(pattern(1, BLOCK, 2 * BLOCK as usize)));
    cache.flush();
    assert_eq!(read_all(&f).unwrap(), pattern(1, 0, size as usize));
}

#[test]
fn a_new_identity_drops_the_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 64 * BLOCK);
    let old = cache.file("f1", "sha1:AA", 2 * BLOCK);
    fill(&cache, &old, 1);
    let old_key = old.key().to_string();
    let new = cache.file("f1", "sha1:BB", 2 * BLOCK);
    cache.flush();
    assert!(read_all(&old).is_none(), "old version still served");
    assert!(read_all(&new).is_none());
    assert!(!store::idx_path(cache.dir(), &old_key).exists());
    assert!(!store::data_path(cache.dir(), &old_key).exists());
    // Stores through a handle of the old version are not kept either.
    old.store(0, Bytes::from(pattern(1, 0, 2 * BLOCK as usize)));
    cache.flush();
    assert!(read_all(&old).is_none());
    fill(&cache, &new, 2);
    assert_eq!(read_all(&new).unwrap(), pattern(2, 0, 2 * BLOCK as usize));
    assert_eq!(cache.status().used, 2 * block_cost(BLOCK) + FILE_COST);
}

#[test]
fn four_writers_never_exceed_the_limit_by_more_than_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 12 * BLOCK;
    let cache = open(dir.path(), limit);
    let ns = cache.dir().to_path_buf();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, ns) = (stop.clone(), peak.clone(), ns.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(disk_usage(&ns), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let cache = cache.clone();
            s.spawn(move || {
                for i in 0..3u64 {
                    let f = cache.file(&format!("f{t}-{i}"), "sha1:00", 4 * BLOCK + 7);
                    for b in 0..5 {
                        let n = store::block_len(f.size(), b) as usize;
                        f.store(b * BLOCK, Bytes::from(pattern(t, b * BLOCK, n)));
                        let st = cache.status();
                        assert!(st.used <= limit, "charged {} > {limit}", st.used);
                    }
                    cache.flush();
                }
            });
        }
    });
    cache.flush();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let st = cache.status();
    assert!(st.used <= limit);
    assert!(st.blocks > 0);
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= limit + BLOCK,
        "peak on disk {peak} > {limit} + one block"
    );
    // What is charged is what is on disk (give or take the idx pages' rounding).
    let on_disk = disk_usage(&ns);
    assert!(
        on_disk <= st.used + 4096,
        "{on_disk} on disk, {} charged",
        st.used
    );
}

#[test]
fn a_pinned_file_is_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 4 * BLOCK + 2 * FILE_COST);
    let a = cache.file("a", "sha1:00", 2 * BLOCK);
    fill(&cache, &a, 1);
    let (file, pin) = a.pin_complete().expect("complete");
    let b = cache.file("b", "sha1:00", 3 * BLOCK);
    fill(&cache, &b, 2);
    assert_eq!(a.cached_blocks(), 2, "pinned blocks evicted");
    assert!(b.cached_blocks() < 3);
    let mut buf = vec![0u8; 2 * BLOCK as usize];
    file.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, pattern(1, 0, 2 * BLOCK as usize));
    drop(pin);
    fill(&cache, &b, 2);
    assert_eq!(b.cached_blocks(), 3);
    assert!(a.cached_blocks() < 2, "unpinned LRU blocks kept");
}

#[test]
fn a_second_cache_on_the_same_namespace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path(), BLOCK);
    assert!(DataCache::open(dir.path(), "u-d", BLOCK).unwrap().is_none());
    // Another drive is another namespace.
    assert!(DataCache::open(dir.path(), "u-other", BLOCK)
        .unwrap()
        .is_some());
}

#[test]
fn a_busy_writer_skips_blocks_and_a_second_pass_fills_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let size = 96 * BLOCK;
    let f = cache.file("big", "sha1:big", size);
    // Three times the writer's queue, handed over at once: `store` never waits, so some of it
    // is skipped (not cached), never queued past the bound.
    let hand_over = |f: &CachedFile| {
        let mut off = 0;
        while off < size {
            let n = 8 * BLOCK;
            f.store(off, Bytes::from(pattern(9, off, n as usize)));
            assert!(cache.inner.pending.load(Ordering::Relaxed) <= MAX_PENDING + n);
            off += n;
        }
        cache.flush();
    };
    let mut passes = 0;
    while f.cached_blocks() < 96 {
        hand_over(&f);
        passes += 1;
        assert!(
            passes < 50,
            "later passes must fill what earlier ones skipped"
        );
    }
    println!(
        "filled in {passes} passes, {} bytes skipped",
        cache.skipped_bytes()
    );
    assert_eq!(read_all(&f).unwrap(), pattern(9, 0, size as usize));
}

#[test]
fn queued_bytes_hold_the_memory_budget_and_an_empty_queue_always_takes_one_job() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1 << 30);
    let budget = Arc::new(tokio::sync::Semaphore::new((4 * BLOCK) as usize));
    cache.share_budget(budget.clone());
    let f = cache.file("m", "sha1:m", 16 * BLOCK);
    // Bigger than the whole budget, into an empty queue: queued anyway (a small budget must
    // still cache), without taking the budget.
    f.store(0, Bytes::from(pattern(2, 0, 8 * BLOCK as usize)));
    cache.flush();
    assert_eq!(f.cached_blocks(), 8);
    assert_eq!(budget.available_permits() as u64, 4 * BLOCK);
    // Within the budget: its permits are held while queued and all given back once written.
    f.store(
        8 * BLOCK,
        Bytes::from(pattern(2, 8 * BLOCK, 2 * BLOCK as usize)),
    );
    cache.flush();
    assert_eq!(budget.available_permits() as u64, 4 * BLOCK);
    assert_eq!(f.cached_blocks(), 10);
    assert_eq!(read_all(&f), None, "six blocks still missing");
    let got: Vec<u8> = f
        .read(0, 10 * BLOCK)
        .into_iter()
        .flat_map(|(_, b)| b.unwrap())
        .collect();
    assert_eq!(got, pattern(2, 0, 10 * BLOCK as usize));
}

#[test]
fn entries_of_files_with_nothing_cached_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 64 * BLOCK);
    for i in 0..1000 {
        let f = cache.file(&format!("f{i}"), "sha1:AA", 10);
        drop(f);
    }
    let kept = cache.file("kept", "sha1:BB", BLOCK);
    kept.store(0, Bytes::from(pattern(3, 0, BLOCK as usize)));
    cache.flush();
    drop(kept);
    let st = cache.inner.lock();
    assert_eq!(
        st.files.len(),
        1,
        "only the file with a block keeps an entry"
    );
    assert_eq!(st.current.len(), 1);
}

#[test]
fn seeding_skips_big_files_and_never_evicts_recent_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 16 * BLOCK + 4 * FILE_COST);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let seed = |name: &str, size: u64| {
        let path = dir.path().join(name);
        std::fs::write(&path, pattern(5, 0, size as usize)).unwrap();
        let file = File::open(&path).unwrap();
        if let Some(done) = cache.seed(name, "sha1:S", size, file) {
            rt.block_on(done).unwrap();
        }
        cache.file(name, "sha1:S", size)
    };
    // Over a quarter of the limit: not seeded at all.
    let big = seed("big", 5 * BLOCK);
    assert_eq!(big.cached_blocks(), 0);
    // Read recently: 12 blocks the seeds must not evict.
    let read = cache.file("read", "sha1:R", 12 * BLOCK);
    fill(&cache, &read, 6);
    assert_eq!(
        read.read(0, 12 * BLOCK)
            .iter()
            .filter(|b| b.1.is_some())
            .count(),
        12
    );
    let small = seed("small", 3 * BLOCK);
    assert_eq!(small.cached_blocks(), 3);
    assert_eq!(read_all(&small).unwrap(), pattern(5, 0, 3 * BLOCK as usize));
    // No room left without evicting recent blocks: this seed stops short, the read file stays.
    let more = seed("more", 4 * BLOCK);
    assert!(more.cached_blocks() < 4);
    assert_eq!(read.cached_blocks(), 12);
    assert!(cache.status().used <= cache.status().limit);
}

/// Descriptors this process holds on files under `dir`.
fn fds_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// A cache of many small files holds a bounded number of descriptors, while filling and after
/// a reopen, and every file still reads back byte-exact (its files opened again on demand).
#[test]
fn many_cached_files_hold_a_bounded_number_of_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let files = 400u64;
    let size = BLOCK / 2;
    {
        let cache = open(dir.path(), 2 * files * BLOCK);
        for i in 0..files {
            let f = cache.file(&format!("f{i}"), &format!("sha1:{i:040X}"), size);
            f.store(0, Bytes::from(pattern(i, 0, size as usize)));
            cache.flush();
            assert_eq!(f.cached_blocks(), 1, "f{i} cached");
        }
        let held = fds_under(dir.path());
        assert!(
            held <= MAX_OPEN_DATA + 64 + 4,
            "{held} descriptors for {files} cached files"
        );
    }
    let cache = open(dir.path(), 2 * files * BLOCK);
    assert!(fds_under(dir.path()) <= 4, "a reopen opens no cached file");
    for i in (0..files).rev() {
        let f = cache.file(&format!("f{i}"), &format!("sha1:{i:040X}"), size);
        assert_eq!(read_all(&f).unwrap(), pattern(i, 0, size as usize), "f{i}");
    }
    assert!(fds_under(dir.path()) <= MAX_OPEN_DATA + 64 + 4);
}
