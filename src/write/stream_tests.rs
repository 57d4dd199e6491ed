//! Uploading while writing (`stream`) and its hand-over at close (`upload_file`), against the
//! in-memory drive.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hashing;
use crate::write::stream::{StreamTarget, Streams, WriteStream};
use crate::write::testdrive::MockDrive;
use crate::write::upload::{upload_file, UploadConfig, UploadTarget};
use crate::write::upload_tests::{data, target};

const KIB: u64 = 1024;
const PART: u64 = 100 * KIB;

fn cfg() -> UploadConfig {
    UploadConfig {
        part_size: Some(PART),
        upload_while_writing: Some(2 * PART),
        ..UploadConfig::default()
    }
}

/// A staged file with a stream following its writer.
struct Writer {
    path: PathBuf,
    file: File,
    stream: Arc<WriteStream>,
}

impl Writer {
    fn new(dir: &tempfile::TempDir, drive: &Arc<MockDrive>, name: &str) -> Writer {
        let path = dir.path().join(name);
        let file = File::create(&path).unwrap();
        let streams = Streams::new(drive.clone(), cfg().upload_while_writing, PART);
        let stream = streams
            .follow(
                &path,
                StreamTarget {
                    parent_file_id: "root".into(),
                    name: name.into(),
                },
            )
            .unwrap();
        Writer { path, file, stream }
    }

    /// Writes `bytes` at `offset` in 16 KiB writes, telling the stream as the fs does.
    fn write(&self, offset: u64, bytes: &[u8]) {
        for (i, chunk) in bytes.chunks(16 * KIB as usize).enumerate() {
            let at = offset + i as u64 * 16 * KIB;
            self.file.write_all_at(chunk, at).unwrap();
            self.stream.on_write(at, chunk.len() as u64);
        }
    }

    async fn upload(&self, drive: &MockDrive, t: &UploadTarget) -> crate::drive::RemoteItem {
        let len = std::fs::metadata(&self.path).unwrap().len();
        self.stream.close(len);
        upload_file(drive, &cfg(), t, &self.path, Some(&self.stream))
            .await
            .unwrap()
    }
}

async fn wait_for_calls(drive: &MockDrive, op: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while drive.calls(op) < n {
        assert!(Instant::now() < deadline, "{op}: {} calls", drive.calls(op));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn content_of(drive: &MockDrive, name: &str) -> Vec<Vec<u8>> {
    drive
        .visible("root", name)
        .into_iter()
        .map(|(_, c)| c)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_go_out_while_the_file_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = Arc::new(MockDrive::new());
    let body = data((10 * PART + 17) as usize, 1);
    let w = Writer::new(&tmp, &drive, "big.bin");
    w.write(0, &body[..(6 * PART) as usize]);
    // Still open: the parts the writer has passed are on their way.
    wait_for_calls(&drive, "upload_part", 6).await;
    assert_eq!(drive.calls("create_file"), 1);
    w.write(6 * PART, &body[(6 * PART) as usize..]);
    let item = w.upload(&drive, &target("big.bin")).await;
    assert_eq!(item.size, body.len() as u64);
    assert_eq!(item.content_hash.unwrap(), hashing::sha1_hex(&body));
    assert_eq!(content_of(&drive, "big.bin"), vec![body]);
    // 11 parts, each sent once; the streamed session plus one rapid-upload probe.
    assert_eq!(drive.calls("upload_part"), 11);
    assert_eq!(drive.calls("create_file"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_file_does_not_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = Arc::new(MockDrive::new());
    let body = data((PART + 5) as usize, 2);
    let w = Writer::new(&tmp, &drive, "small.bin");
    w.write(0, &body);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(drive.calls("create_file"), 0);
    w.upload(&drive, &target("small.bin")).await;
    assert_eq!(content_of(&drive, "small.bin"), vec![body]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriting_sent_bytes_falls_back_to_a_whole_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = Arc::new(MockDrive::new());
    let mut body = data((5 * PART) as usize, 3);
    let w = Writer::new(&tmp, &drive, "patched.bin");
    w.write(0, &body[..(4 * PART) as usize]);
    wait_for_calls(&drive, "upload_part", 3).await;
    w.write(4 * PART, &body[(4 * PART) as usize..]);
    // A header patched at the end, as some muxers do.
    body[..4].copy_from_slice(b"HEAD");
    w.write(0, b"HEAD");
    assert!(!w.stream.is_started(), "the stream stopped");
    w.upload(&drive, &target("patched.bin")).await;
    assert_eq!(content_of(&drive, "patched.bin"), vec![body]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_already_on_the_drive_ends_as_a_rapid_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = Arc::new(MockDrive::new());
    let body = data((4 * PART + 9) as usize, 4);
    drive.seed("elsewhere", "original.bin", &body);
    let w = Writer::new(&tmp, &drive, "copy.bin");
    w.write(0, &body);
    let item = w.upload(&drive, &target("copy.bin")).await;
    assert_eq!(content_of(&drive, "copy.bin"), vec![body]);
    assert_eq!(drive.calls("complete_upload"), 0, "{item:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_renamed_while_written_is_uploaded_under_its_new_name() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = Arc::new(MockDrive::new());
    let body = data((4 * PART) as usize, 5);
    let w = Writer::new(&tmp, &drive, "draft.bin");
    w.write(0, &body);
    wait_for_calls(&drive, "upload_part", 3).await;
    w.upload(&drive, &target("final.bin")).await;
    assert_eq!(content_of(&drive, "final.bin"), vec![body]);
    assert!(content_of(&drive, "draft.bin").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_part_falls_back_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = Arc::new(MockDrive::new());
    let body = data((6 * PART + 1) as usize, 6);
    let w = Writer::new(&tmp, &drive, "flaky.bin");
    w.write(0, &body[..(3 * PART) as usize]);
    wait_for_calls(&drive, "upload_part", 1).await;
    drive.fail_next("upload_part", || {
        crate::error::Error::NotSupported("refused (mock)".into())
    });
    w.write(3 * PART, &body[(3 * PART) as usize..]);
    w.upload(&drive, &target("flaky.bin")).await;
    assert_eq!(content_of(&drive, "flaky.bin"), vec![body]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncating_below_sent_bytes_stops_the_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let drive = Arc::new(MockDrive::new());
    let body = data((3 * PART) as usize, 7);
    let w = Writer::new(&tmp, &drive, "t.bin");
    w.write(0, &body);
    wait_for_calls(&drive, "upload_part", 2).await;
    w.file.set_len(PART / 2).unwrap();
    w.stream.on_truncate(PART / 2);
    assert!(!w.stream.is_started());
    w.upload(&drive, &target("t.bin")).await;
    assert_eq!(
        content_of(&drive, "t.bin"),
        vec![body[..(PART / 2) as usize].to_vec()]
    );
}
