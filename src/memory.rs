//! Giving memory back after a burst. glibc keeps freed heap in the process (a burst of 10,000
//! closes or 30,000 FORGETs left 100+ MiB of RSS that no live allocation used); after the upload
//! queue drains or the FORGET queue empties, the free pages go back to the kernel, at most once
//! per `TRIM_EVERY` (see `platform::release_free_memory`).

use std::time::Duration;

/// At most one `malloc_trim` every this often: a queue that drains after every small file
/// would otherwise trim at each.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Gives the free heap back to the system (`platform::release_free_memory`) on a blocking
/// thread, at most once per `TRIM_EVERY`: asked sooner, it trims when that time is up (the
/// last drain of a burst must not be the one skipped).
pub fn release_after_burst() {
    struct Trims {
        last: Option<std::time::Instant>,
        scheduled: bool,
    }
    static TRIMS: crate::sync::Mutex<Trims> = crate::sync::Mutex::new(
        crate::sync::Level::LEAF,
        "memory.trim",
        Trims {
            last: None,
            scheduled: false,
        },
    );
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let wait = {
        let mut trims = TRIMS.lock();
        if trims.scheduled {
            return;
        }
        trims.scheduled = true;
        trims
            .last
            .map_or(Duration::ZERO, |t| TRIM_EVERY.saturating_sub(t.elapsed()))
    };
    rt.spawn(async move {
        tokio::time::sleep(wait).await;
        {
            let mut trims = TRIMS.lock();
            trims.scheduled = false;
            trims.last = Some(std::time::Instant::now());
        }
        let _ = tokio::task::spawn_blocking(crate::platform::release_free_memory).await;
    });
}
