//! The read engine against the emulator: a read that preempts another handle's read-ahead gets
//! its bytes promptly and without errors, although the emulator may still count the cancelled
//! connection for a moment (its 4th download would be refused with ExceedMaxConcurrency).

use std::sync::Arc;
use std::time::{Duration, Instant};

use alipanfs::api::{Client, ClientConfig};
use alipanfs::drive::Drive;
use alipanfs::emulator::{pattern_bytes, Emulator, EmulatorConfig, Faults};
use alipanfs::read::{ReadConfig, Reader};

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_preempts_read_ahead_on_the_emulator_without_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = EmulatorConfig {
        data_dir: dir.path().join("emulator"),
        rate_list_per_sec: 0.0,
        rate_download_url_per_sec: 0.0,
        rate_other_per_sec: 0.0,
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let a_id = emu.seed_pattern_file("root", "a.bin", 32 * MIB, 1);
    let b_id = emu.seed_pattern_file("root", "b.bin", 16 * MIB, 2);
    // Slow connections: each 4 MiB read-ahead piece of `a` takes about 2 s.
    emu.set_faults(Faults {
        bandwidth_per_conn: Some(2 * MIB),
        ..Faults::default()
    });
    let mut c = ClientConfig::new(dir.path().join("client/tokens.json"));
    c.api_url = emu.api_url();
    c.client_id = Some(EmulatorConfig::default().client_id);
    c.client_secret = Some(EmulatorConfig::default().client_secret);
    c.refresh_token = Some(emu.refresh_token());
    let client = Client::new(c).unwrap();
    client.init().await.unwrap();
    let drive: Arc<dyn Drive> = Arc::new(client);
    let reader = Reader::new(
        drive,
        ReadConfig {
            initial_window: 12 * MIB,
            max_read_ahead: 12 * MIB,
            request_size: 4 * MIB,
            ..ReadConfig::default()
        },
    );

    // `b`'s download URL is learnt first: the client spaces getDownloadUrl calls 1 s apart.
    let b = reader.open(&b_id, 16 * MIB, None);
    b.read(10 * MIB, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    emu.reset_calls();
    let a = reader.open(&a_id, 32 * MIB, None);
    let got = a.read(0, 4096).await.unwrap();
    assert_eq!(&got[..], &pattern_bytes(1, 0, 4096)[..]);
    // The read-ahead (three 4 MiB pieces) now holds every download slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu.calls().get("data/get").copied().unwrap_or(0) < 4 {
        assert!(Instant::now() < deadline, "read-ahead never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let t = Instant::now();
    let got = b
        .read(5 * MIB + 3, 4096)
        .await
        .expect("no error reaches the read");
    let took = t.elapsed();
    eprintln!("b read in {took:?}");
    assert_eq!(&got[..], &pattern_bytes(2, 5 * MIB + 3, 4096)[..]);
    // Far less than the 2 s a read-ahead piece takes (and than the 1 s busy backoff).
    assert!(took < Duration::from_millis(800), "b waited {took:?}");
    // And `a` still reads correctly after losing a piece.
    let got = a.read(4096, 100_000).await.unwrap();
    assert_eq!(&got[..], &pattern_bytes(1, 4096, 100_000)[..]);
}
