//! Unit tests of `upload_file` against the in-memory drive (`testdrive`).

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use crate::error::Error;
use crate::hashing;
use crate::write::testdrive::MockDrive;
use crate::write::upload::{upload_file, UploadConfig, UploadTarget};

const KIB: usize = 1024;

pub(super) fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

fn small_parts() -> UploadConfig {
    UploadConfig {
        part_size: Some(100 * KIB as u64),
        ..UploadConfig::default()
    }
}

pub(super) fn target(name: &str) -> UploadTarget {
    UploadTarget {
        parent_file_id: "root".into(),
        name: name.into(),
        mtime: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        replaces: None,
    }
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[tokio::test]
async fn multipart_upload_sends_parts_in_order_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(350 * KIB + 17, 1);
    let p = write_tmp(&tmp, "a", &content);
    let item = upload_file(&drive, &small_parts(), &target("a.bin"), &p, None)
        .await
        .unwrap();
    assert_eq!(item.size, content.len() as u64);
    assert_eq!(
        item.content_hash.as_deref(),
        Some(&*hashing::sha1_hex(&content))
    );
    assert_eq!(item.local_modified_at, target("a").mtime);
    assert_eq!(drive.calls("upload_part"), 4);
    assert_eq!(drive.calls("create_file"), 1);
    assert_eq!(
        drive.visible("root", "a.bin"),
        vec![(item.file_id, content)]
    );
}

#[tokio::test]
async fn same_content_again_is_rapid_for_small_and_big_files() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let cfg = UploadConfig {
        pre_hash_min_size: 200 * KIB as u64,
        ..small_parts()
    };
    for (len, creates_second) in [(150 * KIB, 1), (300 * KIB, 2)] {
        let content = data(len, len as u8);
        let p = write_tmp(&tmp, "x", &content);
        let creates = drive.calls("create_file");
        upload_file(&drive, &cfg, &target("one"), &p, None)
            .await
            .unwrap();
        // A big file's pre-hash probe found no match and its session was used: one create.
        assert_eq!(drive.calls("create_file"), creates + 1);
        let puts = drive.calls("upload_part");
        let creates = drive.calls("create_file");
        let second = upload_file(&drive, &cfg, &target("two"), &p, None)
            .await
            .unwrap();
        assert_eq!(
            drive.calls("upload_part"),
            puts,
            "rapid upload sends no bytes"
        );
        assert_eq!(drive.calls("create_file"), creates + creates_second);
        assert_eq!(second.size, len as u64);
        assert_eq!(drive.visible("root", "two").len(), 1);
        drive.state().files.clear();
    }
}

#[tokio::test]
async fn rapid_upload_off_uploads_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(10 * KIB, 3);
    drive.seed("root", "seeded", &content);
    let p = write_tmp(&tmp, "x", &content);
    let cfg = UploadConfig {
        rapid_upload: false,
        ..small_parts()
    };
    upload_file(&drive, &cfg, &target("y"), &p, None)
        .await
        .unwrap();
    assert_eq!(drive.calls("upload_part"), 1);
}

#[tokio::test]
async fn expired_part_urls_are_renewed() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(320 * KIB, 4);
    let p = write_tmp(&tmp, "x", &content);
    // Create hands out URLs that are already past their expiry: each must be renewed first.
    drive.state().url_ttl = Some(Duration::ZERO);
    let cfg = small_parts();
    let err = upload_file(&drive, &cfg, &target("y"), &p, None)
        .await
        .unwrap_err();
    // Renewed URLs are expired too (TTL 0): the part gives up after a bounded number of renewals.
    assert!(matches!(err, Error::UrlExpired), "{err}");

    drive.state().url_ttl = Some(Duration::from_secs(3600));
    drive.fail_next("upload_part", || Error::UrlExpired);
    let renewals = drive.calls("upload_urls");
    let item = upload_file(&drive, &cfg, &target("z"), &p, None)
        .await
        .unwrap();
    assert_eq!(drive.calls("upload_urls"), renewals + 1);
    assert_eq!(drive.visible("root", "z"), vec![(item.file_id, content)]);
}

#[tokio::test]
async fn lost_answer_then_part_already_exist_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(250 * KIB, 5);
    let p = write_tmp(&tmp, "x", &content);
    drive.state().lose_put_answer_once = Some(2);
    let item = upload_file(&drive, &small_parts(), &target("y"), &p, None)
        .await
        .unwrap();
    assert_eq!(drive.calls("uploaded_parts"), 1);
    assert_eq!(drive.calls("create_file"), 1);
    assert_eq!(drive.visible("root", "y"), vec![(item.file_id, content)]);
}

#[tokio::test]
async fn truncated_part_restarts_with_a_fresh_session() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(250 * KIB, 6);
    let p = write_tmp(&tmp, "x", &content);
    drive.state().truncate_part_once = Some(2);
    let item = upload_file(&drive, &small_parts(), &target("y"), &p, None)
        .await
        .unwrap();
    assert_eq!(drive.calls("create_file"), 2);
    assert_eq!(drive.visible("root", "y"), vec![(item.file_id, content)]);
}

#[tokio::test]
async fn part_not_sequential_resyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(250 * KIB, 7);
    let p = write_tmp(&tmp, "x", &content);
    drive.fail_next("upload_part", || Error::PartNotSequential);
    let item = upload_file(&drive, &small_parts(), &target("y"), &p, None)
        .await
        .unwrap();
    assert_eq!(drive.calls("uploaded_parts"), 1);
    assert_eq!(drive.visible("root", "y"), vec![(item.file_id, content)]);
}

#[tokio::test]
async fn transient_part_errors_are_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(150 * KIB, 8);
    let p = write_tmp(&tmp, "x", &content);
    drive.fail_next("upload_part", || Error::Network("reset".into()));
    drive.fail_next("upload_part", || {
        Error::api(503, "ServiceUnavailable", "busy")
    });
    upload_file(&drive, &small_parts(), &target("y"), &p, None)
        .await
        .unwrap();
    assert_eq!(drive.calls("upload_part"), 4);
    // A permanent error is not retried.
    drive.fail_next("upload_part", || Error::PermissionDenied("no".into()));
    let no_rapid = UploadConfig {
        rapid_upload: false,
        ..small_parts()
    };
    assert!(matches!(
        upload_file(&drive, &no_rapid, &target("z"), &p, None).await,
        Err(Error::PermissionDenied(_))
    ));
}

#[tokio::test]
async fn replace_trashes_old_copy_only_after_success() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let old = drive.seed("root", "doc.txt", b"old content");
    let p = write_tmp(&tmp, "x", b"new content");
    let t = UploadTarget {
        replaces: Some(old.clone()),
        ..target("doc.txt")
    };
    // A failed upload leaves the old copy alone.
    drive.fail_next("complete_upload", || Error::PermissionDenied("no".into()));
    assert!(upload_file(&drive, &small_parts(), &t, &p, None)
        .await
        .is_err());
    assert_eq!(drive.calls("trash"), 0);
    assert_eq!(
        drive.visible("root", "doc.txt"),
        vec![(old.clone(), b"old content".to_vec())]
    );

    let item = upload_file(&drive, &small_parts(), &t, &p, None)
        .await
        .unwrap();
    assert!(drive.state().trashed.contains(&old));
    assert_eq!(
        drive.visible("root", "doc.txt"),
        vec![(item.file_id, b"new content".to_vec())]
    );
    // The old copy already gone is fine; permanent deletion when configured.
    let cfg = UploadConfig {
        delete_permanently: true,
        ..small_parts()
    };
    let again = upload_file(&drive, &cfg, &t, &p, None).await.unwrap();
    assert_eq!(drive.calls("delete"), 1);
    let t2 = UploadTarget {
        replaces: Some(again.file_id.clone()),
        ..t
    };
    upload_file(&drive, &cfg, &t2, &p, None).await.unwrap();
    assert!(!drive.state().files.contains_key(&again.file_id));
}

#[tokio::test]
async fn mismatch_after_complete_deletes_bad_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let old = drive.seed("root", "f", b"old");
    let p = write_tmp(&tmp, "x", b"fresh bytes");
    drive.state().corrupt_complete = true;
    let t = UploadTarget {
        replaces: Some(old.clone()),
        ..target("f")
    };
    let err = upload_file(&drive, &small_parts(), &t, &p, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(drive.visible("root", "f"), vec![(old, b"old".to_vec())]);
}

#[tokio::test]
async fn quota_and_empty_files() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    drive.state().quota = Some(100);
    let p = write_tmp(&tmp, "x", &data(1000, 9));
    assert!(matches!(
        upload_file(&drive, &small_parts(), &target("big"), &p, None).await,
        Err(Error::QuotaExhausted(_))
    ));
    let e = write_tmp(&tmp, "empty", b"");
    let item = upload_file(&drive, &small_parts(), &target("empty"), &e, None)
        .await
        .unwrap();
    assert_eq!(item.size, 0);
    assert_eq!(drive.calls("upload_part"), 0);
    // A second empty file is a rapid upload of the empty content.
    let item2 = upload_file(&drive, &small_parts(), &target("empty2"), &e, None)
        .await
        .unwrap();
    assert_eq!(item2.size, 0);
    assert_eq!(drive.calls("complete_upload"), 1);
}

/// A session opened by an earlier attempt (or run) with its first parts sent.
async fn half_sent_session(
    drive: &MockDrive,
    content: &[u8],
    name: &str,
    sent_parts: u32,
) -> crate::write::resume::SessionRecord {
    use crate::drive::{CheckNameMode, Drive, NewFile, UploadHashes};
    let part_size = 100 * KIB as u64;
    let count = content.len().div_ceil(part_size as usize) as u32;
    let session = drive
        .create_file(&NewFile {
            parent_file_id: "root".into(),
            name: name.into(),
            size: Some(content.len() as u64),
            check_name_mode: CheckNameMode::Ignore,
            part_count: count,
            local_modified_at: None,
            hashes: UploadHashes::None,
        })
        .await
        .unwrap();
    let upload_id = session.upload_id.clone().unwrap();
    let numbers: Vec<u32> = (1..=sent_parts).collect();
    let urls = drive
        .upload_urls(&session.file_id, &upload_id, &numbers)
        .await
        .unwrap();
    for url in urls {
        let start = (url.part_number as usize - 1) * part_size as usize;
        let end = (start + part_size as usize).min(content.len());
        let body = bytes::Bytes::copy_from_slice(&content[start..end]);
        drive.upload_part(&url, body).await.unwrap();
    }
    crate::write::resume::SessionRecord {
        file_id: session.file_id,
        upload_id,
        part_size,
        parent_file_id: "root".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn a_remembered_session_is_continued_from_its_first_missing_part() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(450 * KIB + 3, 9);
    let p = write_tmp(&tmp, "r", &content);
    let record = half_sent_session(&drive, &content, "r.bin", 2).await;
    crate::write::resume::remember(&p, &record);
    let item = upload_file(&drive, &small_parts(), &target("r.bin"), &p, None)
        .await
        .unwrap();
    assert_eq!(item.file_id, record.file_id, "the earlier session landed");
    assert_eq!(drive.calls("create_file"), 1, "no new session");
    assert_eq!(drive.calls("upload_part"), 5, "2 earlier + the 3 missing");
    assert_eq!(
        drive.visible("root", "r.bin"),
        vec![(item.file_id, content)]
    );
    assert!(crate::write::resume::recall(&p).is_none(), "record dropped");
}

#[tokio::test]
async fn a_session_for_other_content_or_another_name_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = MockDrive::new();
    let content = data(350 * KIB, 10);
    let p = write_tmp(&tmp, "s", &content);
    // Parts sent, then the content changed: the resumed copy fails its check and goes.
    let mut stale = content.clone();
    stale[5] ^= 0xff;
    let record = half_sent_session(&drive, &stale, "s.bin", 2).await;
    crate::write::resume::remember(&p, &record);
    let item = upload_file(&drive, &small_parts(), &target("s.bin"), &p, None)
        .await
        .unwrap();
    assert_ne!(item.file_id, record.file_id);
    assert_eq!(
        drive.visible("root", "s.bin"),
        vec![(item.file_id, content.clone())]
    );
    // A session opened under another name is left alone.
    let other = half_sent_session(&drive, &content, "old-name.bin", 1).await;
    crate::write::resume::remember(&p, &other);
    let item = upload_file(&drive, &small_parts(), &target("t.bin"), &p, None)
        .await
        .unwrap();
    assert_ne!(item.file_id, other.file_id);
    assert_eq!(
        drive.visible("root", "t.bin"),
        vec![(item.file_id, content)]
    );
    assert!(drive.visible("root", "old-name.bin").is_empty());
    assert!(crate::write::resume::recall(&p).is_none());
}
