//! Unit tests of `UploadQueue` against the in-memory drive (`testdrive`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::error::Error;
use crate::write::queue::{UploadEvent, UploadQueue};
use crate::write::staging::{read_sidecar, sidecar_path, Staging};
use crate::write::testdrive::MockDrive;
use crate::write::upload::{UploadConfig, UploadTarget};

fn target(name: &str) -> UploadTarget {
    UploadTarget {
        parent_file_id: "root".into(),
        name: name.into(),
        mtime: None,
        replaces: None,
    }
}

fn stage(st: &Staging, content: &[u8]) -> PathBuf {
    let f = st.create().unwrap();
    std::fs::write(&f.path, content).unwrap();
    f.path
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<UploadEvent>) -> UploadEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no upload event within 10 s")
        .expect("event channel closed")
}

async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    st: Staging,
    drive: Arc<MockDrive>,
    q: Arc<UploadQueue>,
    rx: mpsc::UnboundedReceiver<UploadEvent>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let st = Staging::new(tmp.path().join("staging")).unwrap();
    let drive = Arc::new(MockDrive::new());
    let q = UploadQueue::new(drive.clone(), UploadConfig::default());
    let rx = q.subscribe();
    Fixture {
        _tmp: tmp,
        st,
        drive,
        q,
        rx,
    }
}

fn gone(p: &Path) -> bool {
    !p.exists() && !sidecar_path(p).exists()
}

#[tokio::test]
async fn uploads_then_removes_staging_and_journal() {
    let mut f = fixture();
    let a = stage(&f.st, b"hello");
    f.q.submit(7, target("h.txt"), a.clone());
    assert_eq!(f.q.drain(Duration::from_secs(10)).await, 0);
    let ev = next_event(&mut f.rx).await;
    assert_eq!((ev.key, &ev.staged), (7, &a));
    let item = ev.outcome.unwrap();
    assert_eq!(item.name, "h.txt");
    assert!(gone(&a));
    assert_eq!(f.q.pending(), 0);
    assert!(!f.q.is_pending(7));
    assert_eq!(
        f.drive.visible("root", "h.txt"),
        vec![(item.file_id, b"hello".to_vec())]
    );
}

#[tokio::test]
async fn newer_job_supersedes_waiting_one_and_replaces_running_result() {
    let mut f = fixture();
    f.drive.set_hold(true);
    let a = stage(&f.st, b"version A");
    let b = stage(&f.st, b"version B");
    let c = stage(&f.st, b"version C");
    f.q.submit(1, target("f"), a.clone());
    let drive = f.drive.clone();
    until("A running", || drive.waiting_in_create()).await;
    f.q.submit(1, target("f"), b.clone());
    f.q.submit(1, target("f"), c.clone());
    assert!(gone(&b), "superseded staging file removed");
    assert!(a.exists() && c.exists());
    assert_eq!(f.q.pending(), 2);
    assert!(f.q.is_pending(1));
    f.drive.set_hold(false);
    assert_eq!(f.q.drain(Duration::from_secs(10)).await, 0);

    let first = next_event(&mut f.rx).await;
    let second = next_event(&mut f.rx).await;
    assert_eq!(first.staged, a);
    assert_eq!(second.staged, c);
    let a_id = first.outcome.unwrap().file_id;
    let c_item = second.outcome.unwrap();
    // C replaced what A produced: one visible copy, with C's bytes.
    assert!(f.drive.state().trashed.contains(&a_id));
    assert_eq!(
        f.drive.visible("root", "f"),
        vec![(c_item.file_id, b"version C".to_vec())]
    );
    assert!(gone(&a) && gone(&c));
    assert!(f.rx.try_recv().is_err(), "no event for the superseded job");
}

#[tokio::test]
async fn failures_are_retried_and_staging_kept_until_success() {
    let mut f = fixture();
    f.drive
        .fail_next("create_file", || Error::PermissionDenied("flaky".into()));
    let a = stage(&f.st, b"data");
    f.q.submit(3, target("r"), a.clone());
    let ev = next_event(&mut f.rx).await;
    assert!(ev.outcome.unwrap_err().contains("flaky"));
    assert!(a.exists() && sidecar_path(&a).exists());
    assert!(f.q.is_pending(3));
    let ev = next_event(&mut f.rx).await;
    assert!(ev.outcome.is_ok());
    assert_eq!(f.q.drain(Duration::from_secs(5)).await, 0);
    assert!(gone(&a));
}

#[tokio::test]
async fn failed_job_is_dropped_when_a_newer_one_arrives() {
    let mut f = fixture();
    f.drive
        .fail_next("create_file", || Error::PermissionDenied("once".into()));
    let a = stage(&f.st, b"old");
    let b = stage(&f.st, b"new");
    f.q.submit(4, target("s"), a.clone());
    assert!(next_event(&mut f.rx).await.outcome.is_err());
    f.q.submit(4, target("s"), b.clone());
    let ev = next_event(&mut f.rx).await;
    assert_eq!(ev.staged, b);
    let item = ev.outcome.unwrap();
    assert_eq!(f.q.drain(Duration::from_secs(5)).await, 0);
    assert!(gone(&a) && gone(&b));
    assert_eq!(
        f.drive.visible("root", "s"),
        vec![(item.file_id, b"new".to_vec())]
    );
}

#[tokio::test]
async fn set_target_renames_waiting_and_running_jobs() {
    let mut f = fixture();
    f.drive.set_hold(true);
    let a = stage(&f.st, b"first");
    let b = stage(&f.st, b"second");
    f.q.submit(5, target("old.txt"), a.clone());
    let drive = f.drive.clone();
    until("A running", || drive.waiting_in_create()).await;
    f.q.submit(5, target("old.txt"), b.clone());
    f.q.set_target(5, |t| {
        t.name = "new.txt".into();
        t.parent_file_id = "dir".into();
    });
    assert_eq!(read_sidecar(&sidecar_path(&b)).unwrap().name, "new.txt");
    f.q.set_target(99, |t| t.name = "nobody".into()); // unknown key: no-op
    f.drive.set_hold(false);
    assert_eq!(f.q.drain(Duration::from_secs(10)).await, 0);
    // The rename stopped the running upload of the first version, which a newer one
    // supersedes anyway: only the second version ends on the drive, under the new name. (An
    // attempt that landed as the rename came is removed and the upload done again, so the
    // copy left is the last one reported.)
    let mut last = None;
    while let Ok(ev) = f.rx.try_recv() {
        if let Ok(item) = ev.outcome {
            last = Some(item);
        }
    }
    let second = last.expect("an upload event");
    assert_eq!(
        f.drive.visible("dir", "new.txt"),
        vec![(second.file_id, b"second".to_vec())]
    );
    assert!(f.drive.visible("root", "old.txt").is_empty());
    assert!(gone(&a) && gone(&b));
}

#[tokio::test]
async fn a_rename_stops_a_running_upload_and_it_restarts_under_the_new_name() {
    let mut f = fixture();
    f.drive.set_hold(true);
    let a = stage(&f.st, b"only");
    f.q.submit(6, target("old.txt"), a.clone());
    let drive = f.drive.clone();
    until("A running", || drive.waiting_in_create()).await;
    assert!(f.q.set_target(6, |t| t.name = "new.txt".into()));
    // settle returns once the attempt under the old name has stopped.
    tokio::time::timeout(Duration::from_secs(5), f.q.settle(6))
        .await
        .expect("the running attempt stops at once");
    assert!(read_sidecar(&sidecar_path(&a)).unwrap().closed);
    f.drive.set_hold(false);
    assert_eq!(f.q.drain(Duration::from_secs(10)).await, 0);
    let item = next_event(&mut f.rx).await.outcome.unwrap();
    assert_eq!(item.name, "new.txt");
    assert!(f.drive.visible("root", "old.txt").is_empty());
}

#[tokio::test]
async fn a_cancel_while_complete_is_answered_removes_what_landed() {
    let f = fixture();
    f.drive.set_hold_complete_answer(true);
    let a = stage(&f.st, b"landing");
    f.q.submit(8, target("late.txt"), a.clone());
    let drive = f.drive.clone();
    until("the file committed, its answer on the wire", || {
        !drive.visible("root", "late.txt").is_empty()
    })
    .await;
    f.q.cancel(8);
    tokio::time::timeout(Duration::from_secs(5), f.q.settle(8))
        .await
        .expect("the running attempt stops at once");
    // Before settle returned, what the stopped attempt created was removed.
    assert!(f.drive.visible("root", "late.txt").is_empty());
    f.drive.set_hold_complete_answer(false);
}

#[tokio::test]
async fn a_cancel_stops_a_running_upload_and_nothing_lands() {
    let f = fixture();
    f.drive.set_hold(true);
    let a = stage(&f.st, b"doomed");
    f.q.submit(7, target("gone.txt"), a.clone());
    let drive = f.drive.clone();
    until("A running", || drive.waiting_in_create()).await;
    let taken = f.q.cancel(7);
    assert_eq!(taken, vec![(target("gone.txt"), a.clone())]);
    tokio::time::timeout(Duration::from_secs(5), f.q.settle(7))
        .await
        .expect("the running attempt stops at once");
    // The staged version is the canceller's to discard (or to submit again).
    assert!(a.exists() && sidecar_path(&a).exists());
    f.drive.set_hold(false);
    assert_eq!(f.q.drain(Duration::from_secs(10)).await, 0);
    assert!(f.drive.visible("root", "gone.txt").is_empty());
}

#[tokio::test]
async fn quota_keeps_the_job_pending() {
    let mut f = fixture();
    f.drive.state().quota = Some(3);
    let a = stage(&f.st, b"too big");
    f.q.submit(6, target("q"), a.clone());
    let ev = next_event(&mut f.rx).await;
    assert!(ev.outcome.unwrap_err().contains("quota"));
    assert_eq!(f.q.drain(Duration::from_millis(50)).await, 1);
    assert!(f.q.is_pending(6));
    assert!(a.exists() && sidecar_path(&a).exists());
    // The journal lets a later start replay it.
    let jobs = f.st.recover().unwrap();
    assert_eq!(jobs, vec![(target("q"), a)]);
}

#[tokio::test]
async fn at_most_two_uploads_run_at_once() {
    let mut f = fixture();
    f.drive.set_hold(true);
    let staged: Vec<PathBuf> = (0..4u8).map(|i| stage(&f.st, &[i; 3])).collect();
    for (i, p) in staged.iter().enumerate() {
        f.q.submit(10 + i as u64, target(&format!("n{i}")), p.clone());
    }
    let drive = f.drive.clone();
    until("two uploads parked", || drive.create_waiters() == 2).await;
    // Absence can only be observed over time: give the others a chance to (wrongly) start.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(f.drive.create_waiters(), 2);
    assert_eq!(f.q.pending(), 4);
    f.drive.set_hold(false);
    assert_eq!(f.q.drain(Duration::from_secs(10)).await, 0);
    for _ in 0..4 {
        assert!(next_event(&mut f.rx).await.outcome.is_ok());
    }
}

#[tokio::test]
async fn vanished_staging_file_is_abandoned_not_retried_forever() {
    let mut f = fixture();
    let a = stage(&f.st, b"x");
    std::fs::remove_file(&a).unwrap();
    f.q.submit(8, target("v"), a.clone());
    let ev = next_event(&mut f.rx).await;
    assert!(ev.outcome.unwrap_err().contains("vanished"));
    assert_eq!(f.q.drain(Duration::from_secs(5)).await, 0);
    assert!(gone(&a));
}

#[tokio::test]
async fn stale_replaces_is_mapped_to_the_newest_copy() {
    let mut f = fixture();
    let orig = f.drive.seed("root", "m", b"v0");
    let a = stage(&f.st, b"v1");
    let t = UploadTarget {
        replaces: Some(orig.clone()),
        ..target("m")
    };
    f.q.submit(9, t.clone(), a);
    let v1 = next_event(&mut f.rx).await.outcome.unwrap().file_id;
    assert_eq!(f.q.drain(Duration::from_secs(5)).await, 0);
    // The fs has not applied the event yet and still names the original copy.
    let b = stage(&f.st, b"v2");
    f.q.submit(9, t, b);
    let v2 = next_event(&mut f.rx).await.outcome.unwrap().file_id;
    assert!(f.drive.state().trashed.contains(&v1));
    assert_eq!(f.drive.visible("root", "m"), vec![(v2, b"v2".to_vec())]);
}

/// More landings than the old broadcast channel held (1,024), none read until all are done:
/// every one still arrives (the hand-off to the fs cannot drop), and `completed` empties as
/// the fs applies them.
#[tokio::test]
async fn no_event_is_lost_to_a_slow_subscriber() {
    let mut f = fixture();
    const FILES: u64 = 1500;
    for key in 0..FILES {
        let staged = stage(&f.st, format!("file {key}").as_bytes());
        f.q.submit(key, target(&format!("f{key}")), staged);
    }
    assert_eq!(f.q.drain(Duration::from_secs(60)).await, 0);
    assert_eq!(f.q.unapplied(), FILES as usize);
    let mut landed = std::collections::HashSet::new();
    while let Ok(ev) = f.rx.try_recv() {
        let item = ev.outcome.expect("mock uploads succeed");
        assert_eq!(f.q.uploaded_file_id(ev.key), Some(item.file_id.clone()));
        f.q.applied(ev.key, &item.file_id);
        landed.insert(ev.key);
    }
    assert_eq!(landed.len(), FILES as usize, "an upload event was lost");
    assert_eq!(f.q.unapplied(), 0, "applied landings are forgotten");
    assert_eq!(f.drive.state().files.len(), FILES as usize);
}
