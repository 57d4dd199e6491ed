//! The emulator's data plane and upload protocol over plain HTTP: Range semantics, URL expiry,
//! signatures, the concurrency cap, sequential parts, complete, pre-hash and rapid upload.

#[path = "emulator_support.rs"]
mod support;

use alipanfs::emulator::{pattern_bytes, Emulator, EmulatorConfig, Faults};
use alipanfs::hashing;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;

async fn download_url(h: &H, id: &str, expire: u64) -> String {
    let r = h
        .ok(
            "openFile/getDownloadUrl",
            json!({"drive_id": h.drive, "file_id": id, "expire_sec": expire}),
        )
        .await;
    r["url"].as_str().unwrap().to_string()
}

fn xml_code(text: &str) -> String {
    text.split("<Code>")
        .nth(1)
        .and_then(|s| s.split("</Code>").next())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn ranges_follow_oss_semantics() {
    let h = start(|_| {}).await;
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let id = h.emu.seed_file("root", "k.bin", &data);
    let r = h
        .ok(
            "openFile/getDownloadUrl",
            json!({"drive_id": h.drive, "file_id": id}),
        )
        .await;
    assert_eq!(r["method"], "GET");
    assert_eq!(r["size"], 1000);
    let url = r["url"].as_str().unwrap().to_string();
    let exp: u64 = url
        .split("x-oss-expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (899..=901).contains(&(exp - now)),
        "default expiry is 900 s"
    );
    let get = |range: Option<&str>, standard: bool| {
        let mut rq =
            h.c.get(&url)
                .header("authorization", "Bearer ignored")
                .header("referer", "https://www.aliyundrive.com/");
        if let Some(r) = range {
            rq = rq.header("range", r);
        }
        if standard {
            rq = rq.header("x-oss-range-behavior", "standard");
        }
        async move {
            let r = rq.send().await.unwrap();
            let status = r.status().as_u16();
            let cr = r
                .headers()
                .get("content-range")
                .map(|v| v.to_str().unwrap().to_string());
            (status, cr, r.bytes().await.unwrap().to_vec())
        }
    };
    let (s, cr, b) = get(None, false).await;
    assert_eq!((s, cr, b.clone()), (200, None, data.clone()));
    let (s, cr, b) = get(Some("bytes=10-19"), false).await;
    assert_eq!(
        (s, cr.as_deref(), &b[..]),
        (206, Some("bytes 10-19/1000"), &data[10..20])
    );
    let (s, _, b) = get(Some("bytes=990-"), false).await;
    assert_eq!((s, &b[..]), (206, &data[990..]));
    let (s, cr, b) = get(Some("bytes=-5"), false).await;
    assert_eq!(
        (s, cr.as_deref(), &b[..]),
        (206, Some("bytes 995-999/1000"), &data[995..])
    );
    // Invalid ranges without the standard header: whole object, 200.
    for bad in [
        "bytes=500-2000",
        "bytes=1000-2000",
        "bytes=5-1",
        "bytes=0-1,5-6",
        "items=0-1",
    ] {
        let (s, cr, b) = get(Some(bad), false).await;
        assert_eq!((s, cr, b.len()), (200, None, 1000), "{bad}");
    }
    // With x-oss-range-behavior: standard, clamp or 416.
    let (s, cr, b) = get(Some("bytes=500-2000"), true).await;
    assert_eq!(
        (s, cr.as_deref(), &b[..]),
        (206, Some("bytes 500-999/1000"), &data[500..])
    );
    let (s, _, b) = get(Some("bytes=1000-2000"), true).await;
    assert_eq!(s, 416);
    assert_eq!(xml_code(&String::from_utf8_lossy(&b)), "InvalidRange");
    assert_eq!(h.emu.call_count("data/get"), 11);
}

#[tokio::test]
async fn expired_and_tampered_urls_get_403_xml() {
    let h = start(|c| c.download_url_ttl_cap = Duration::from_secs(1)).await;
    let id = h.emu.seed_file("root", "e.bin", b"0123456789");
    let url = download_url(&h, &id, 14400).await;
    let exp: u64 = url
        .split("x-oss-expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tampered = url.replace(
        &format!("x-oss-expires={exp}"),
        &format!("x-oss-expires={}", exp + 1000),
    );
    let r = h.c.get(&tampered).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(xml_code(&r.text().await.unwrap()), "SignatureDoesNotMatch");
    assert_eq!(h.c.get(&url).send().await.unwrap().status(), 200);
    let expired = wait_until(Duration::from_secs(4), || async {
        h.c.get(&url).send().await.unwrap().status() == 403
    })
    .await;
    assert!(expired);
    let r =
        h.c.get(&url)
            .header("range", "bytes=0-1")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("xml"));
    let text = r.text().await.unwrap();
    assert_eq!(xml_code(&text), "AccessDenied");
    assert!(
        text.contains("<Message>Request has expired.</Message>"),
        "{text}"
    );
    assert!(
        text.contains("<EC>0002-00000069</EC>") && text.contains("<ServerTime>"),
        "{text}"
    );
}

#[tokio::test]
async fn fourth_concurrent_download_is_refused() {
    let h = start(|c| {
        c.faults = Faults {
            bandwidth_per_conn: Some(64 * 1024),
            ..Default::default()
        };
    })
    .await;
    let id = h.emu.seed_pattern_file("root", "slow.bin", 1 << 20, 5);
    let url = download_url(&h, &id, 900).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let r = h.c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    assert_eq!(h.emu.active_downloads(), 3);
    let r =
        h.c.get(&url)
            .header("range", "bytes=0-10")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 403);
    let text = r.text().await.unwrap();
    assert_eq!(xml_code(&text), "RequestDeniedByCallback");
    assert!(text.contains("ExceedMaxConcurrency") && text.contains("0007-00000209"));
    // Closing a stream frees its slot.
    drop(streams.pop());
    assert!(
        wait_until(Duration::from_secs(3), || async {
            h.emu.active_downloads() == 2
        })
        .await
    );
    let r =
        h.c.get(&url)
            .header("range", "bytes=0-10")
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().to_vec(), pattern_bytes(5, 0, 11));
}

#[tokio::test]
async fn bandwidth_cap_paces_the_body() {
    let h = start(|c| {
        c.faults = Faults {
            bandwidth_per_conn: Some(200_000),
            ..Default::default()
        };
    })
    .await;
    let id = h.emu.seed_pattern_file("root", "bw.bin", 100_000, 9);
    let url = download_url(&h, &id, 900).await;
    let t = Instant::now();
    let body = h.c.get(&url).send().await.unwrap().bytes().await.unwrap();
    let took = t.elapsed();
    assert_eq!(body.to_vec(), pattern_bytes(9, 0, 100_000));
    assert!(took >= Duration::from_millis(400), "{took:?}");
}

/// Parallel connections share the link: three 200 kB bodies over a 1 MB/s link take 0.6 s
/// together, where a per-connection cap of the same rate would let them finish in 0.2 s.
#[tokio::test]
async fn link_bandwidth_is_shared_by_all_downloads() {
    let h = start(|c| {
        c.faults = Faults {
            link_bandwidth: Some(1_000_000),
            ..Default::default()
        };
    })
    .await;
    let id = h.emu.seed_pattern_file("root", "link.bin", 600_000, 4);
    let url = download_url(&h, &id, 900).await;
    let t = Instant::now();
    let bodies = futures_util::future::join_all((0..3u64).map(|i| {
        let (c, url) = (h.c.clone(), url.clone());
        let range = format!("bytes={}-{}", i * 200_000, i * 200_000 + 199_999);
        async move {
            let r = c.get(&url).header("range", range).send().await.unwrap();
            assert_eq!(r.status(), 206);
            r.bytes().await.unwrap()
        }
    }))
    .await;
    let took = t.elapsed();
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(b.to_vec(), pattern_bytes(4, i as u64 * 200_000, 200_000));
    }
    assert!(took >= Duration::from_millis(550), "{took:?}");
}

#[tokio::test]
async fn sequential_parts_and_complete() {
    let h = start(|_| {}).await;
    let content: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let b = h
        .ok("openFile/create", json!({"drive_id": h.drive, "parent_file_id": "root", "name": "up.bin", "type": "file",
            "check_name_mode": "refuse", "size": content.len(), "local_modified_at": "2024-01-02T03:04:05.678Z",
            "part_info_list": [{"part_number": 1}, {"part_number": 2}, {"part_number": 3}]}))
        .await;
    assert_eq!(b["rapid_upload"], false);
    let fid = b["file_id"].as_str().unwrap().to_string();
    let uid = b["upload_id"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 32);
    let urls: Vec<String> = b["part_info_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["upload_url"].as_str().unwrap().to_string())
        .collect();
    // Invisible until complete.
    assert!(h.list_all("root", json!({})).await.is_empty());
    assert_err(
        &h.call(
            "openFile/get_by_path",
            json!({"drive_id": h.drive, "file_path": "/up.bin"}),
        )
        .await,
        400,
        "NotFound.File",
    );
    let put = |i: usize, body: Vec<u8>| h.c.put(&urls[i]).body(body).send();
    // Out of order.
    let r = put(1, content[100_000..200_000].to_vec()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(xml_code(&r.text().await.unwrap()), "PartNotSequential");
    // Content-Type is refused (signature covers it).
    let r =
        h.c.put(&urls[0])
            .header("content-type", "application/octet-stream")
            .body(content[..100_000].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(xml_code(&r.text().await.unwrap()), "SignatureDoesNotMatch");
    let r = put(0, content[..100_000].to_vec()).await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    // Duplicate.
    let r = put(0, content[..100_000].to_vec()).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(xml_code(&r.text().await.unwrap()), "PartAlreadyExist");
    // A URL for part 2 cannot be reused for part 3.
    let forged = urls[1].replace("partNumber=2", "partNumber=3");
    assert_eq!(
        h.c.put(&forged)
            .body(vec![1])
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        put(1, content[100_000..200_000].to_vec())
            .await
            .unwrap()
            .status(),
        200
    );
    let lp = h.ok("openFile/listUploadedParts", json!({"drive_id": h.drive, "file_id": fid, "upload_id": uid, "part_number_marker": ""})).await;
    assert_eq!(lp["parallelUpload"], false);
    let parts = lp["uploaded_parts"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["etag"], json!(etag));
    assert_eq!(parts[1]["part_size"], 100_000);
    assert_eq!(lp["next_part_number_marker"], "");
    // Fresh URL for part 3 through getUploadUrl.
    let gu = h.ok("openFile/getUploadUrl", json!({"drive_id": h.drive, "file_id": fid, "upload_id": uid, "part_info_list": [{"part_number": 3}]})).await;
    let u3 = gu["part_info_list"][0]["upload_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_err(
        &h.call(
            "openFile/getUploadUrl",
            json!({"drive_id": h.drive, "file_id": fid, "upload_id": uid}),
        )
        .await,
        400,
        "InvalidParameter.PartInfoList",
    );
    assert_eq!(
        h.c.put(&u3)
            .body(content[200_000..].to_vec())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let done = h
        .ok(
            "openFile/complete",
            json!({"drive_id": h.drive, "file_id": fid, "upload_id": uid}),
        )
        .await;
    assert_eq!(done["size"], 300_000);
    assert_eq!(done["content_hash"], json!(hashing::sha1_hex(&content)));
    assert_eq!(done["local_modified_at"], "2024-01-02T03:04:05.678Z");
    assert_eq!(h.emu.file_sha1(&fid), Some(hashing::sha1_hex(&content)));
    assert_eq!(h.list_all("root", json!({})).await.len(), 1);
    // The session is gone.
    let r = h
        .call(
            "openFile/complete",
            json!({"drive_id": h.drive, "file_id": fid, "upload_id": uid}),
        )
        .await;
    assert_envelope(&r, 400, "NotFound.UploadId");
    assert_err(
        &h.call(
            "openFile/listUploadedParts",
            json!({"drive_id": h.drive, "file_id": fid, "upload_id": uid}),
        )
        .await,
        400,
        "NotFound.UploadId",
    );
    let r = h.c.put(&u3).body(vec![1, 2, 3]).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(xml_code(&r.text().await.unwrap()), "NoSuchUpload");
    // And the bytes come back through a download.
    let url = download_url(&h, &fid, 900).await;
    assert_eq!(
        h.c.get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        content
    );
    assert_eq!(h.emu.call_count("data/put"), 8);
}

#[tokio::test]
async fn upload_url_expiry_zero_parts_and_size_mismatch() {
    let h = start(|c| c.upload_url_ttl = Duration::from_secs(1)).await;
    let b = h.ok("openFile/create", json!({"drive_id": h.drive, "parent_file_id": "root", "name": "e", "type": "file", "size": 3})).await;
    assert_eq!(
        b["part_info_list"].as_array().unwrap().len(),
        1,
        "one part when none declared"
    );
    let url = b["part_info_list"][0]["upload_url"]
        .as_str()
        .unwrap()
        .to_string();
    // Wait on the clock, not on a PUT (a PUT before expiry would store the part).
    let exp: u64 = url
        .split("x-oss-expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    assert!(wait_until(Duration::from_secs(4), || async { unix() > exp }).await);
    let r = h.c.put(&url).body(vec![1, 2, 3]).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Request has expired."));
    // Size mismatch is refused at complete (the declared size was 3, nothing was uploaded).
    let r = h
        .call(
            "openFile/complete",
            json!({"drive_id": h.drive, "file_id": b["file_id"], "upload_id": b["upload_id"]}),
        )
        .await;
    assert_err(&r, 400, "InvalidParameter.Size");
    // Zero parts and no declared size: an empty file.
    let b = h.ok("openFile/create", json!({"drive_id": h.drive, "parent_file_id": "root", "name": "empty", "type": "file", "size": null})).await;
    let done = h
        .ok(
            "openFile/complete",
            json!({"drive_id": h.drive, "file_id": b["file_id"], "upload_id": b["upload_id"]}),
        )
        .await;
    assert_eq!(done["size"], 0);
    assert_eq!(
        done["content_hash"],
        "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"
    );
}

#[tokio::test]
async fn pre_hash_probe_and_rapid_upload_with_proof() {
    let h = start(|_| {}).await;
    let content: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 256) as u8).collect();
    let orig = h.upload("root", "orig.bin", &content, 400_000).await;
    let sha = orig["content_hash"].as_str().unwrap().to_string();
    assert_eq!(sha, "ECFC8E86FDD83811F9CC9BF500993B63069923BE");
    let base = json!({"drive_id": h.drive, "parent_file_id": "root", "name": "copy.bin", "type": "file", "check_name_mode": "ignore", "size": content.len()});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    // Pre-hash match: 409 PreHashMatched.
    let r = h
        .call(
            "openFile/create",
            with(json!({"pre_hash": hashing::pre_hash(&content).to_lowercase()})),
        )
        .await;
    assert_envelope(&r, 409, "PreHashMatched");
    // No match (other size): a normal session.
    let r = h
        .call(
            "openFile/create",
            with(json!({"pre_hash": hashing::pre_hash(&content), "size": 5})),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["upload_id"].is_string() && r.body["part_info_list"].is_array());
    // Wrong proof: normal session, rapid_upload false.
    let r = h.ok("openFile/create", with(json!({"content_hash": sha, "content_hash_name": "sha1", "proof_code": "AAAAAAAAAAA=", "proof_version": "v1"}))).await;
    assert_eq!(r["rapid_upload"], false);
    assert!(r["part_info_list"].is_array());
    // Right proof, computed against the request's token: rapid.
    let proof = hashing::proof_code(&h.token, &content);
    let r = h.ok("openFile/create", with(json!({"content_hash": sha.to_lowercase(), "content_hash_name": "sha1", "proof_code": proof, "proof_version": "v1"}))).await;
    assert_eq!(r["rapid_upload"], true);
    let fid = r["file_id"].as_str().unwrap().to_string();
    assert_eq!(h.emu.file_sha1(&fid), Some(sha.clone()));
    assert!(h
        .list_all("root", json!({}))
        .await
        .iter()
        .any(|i| i["file_id"] == json!(fid)));
    // complete is optional and idempotent; getUploadUrl afterwards is AlreadyExist.File.
    let c = json!({"drive_id": h.drive, "file_id": fid, "upload_id": r["upload_id"]});
    assert_eq!(
        h.ok("openFile/complete", c.clone()).await["content_hash"],
        json!(sha)
    );
    assert_eq!(
        h.ok("openFile/complete", c.clone()).await["size"],
        content.len()
    );
    let mut gu = c.clone();
    gu["part_info_list"] = json!([{"part_number": 1}]);
    assert_err(
        &h.call("openFile/getUploadUrl", gu).await,
        409,
        "AlreadyExist.File",
    );
    // The proof of another token does not pass.
    let other = hashing::proof_code("another.access.token", &content);
    if other != proof {
        let r = h
            .ok(
                "openFile/create",
                with(json!({"content_hash": sha, "proof_code": other, "proof_version": "v1"})),
            )
            .await;
        assert_eq!(r["rapid_upload"], false);
    }
    // Rapid uploads cost quota but no bytes on disk: one blob.
    let s = h.ok("user/getSpaceInfo", json!({})).await;
    assert_eq!(
        s["personal_space_info"]["used_size"],
        2 * content.len() as u64
    );
    let blobs = std::fs::read_dir(h.dir.path().join("blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1);
}

#[tokio::test]
async fn dropped_data_connections_truncate_bodies() {
    let h = start(|_| {}).await;
    let id = h.emu.seed_pattern_file("root", "t.bin", 200_000, 2);
    let url = download_url(&h, &id, 900).await;
    h.emu.set_faults(Faults {
        failure_rate: 1.0,
        ..Default::default()
    });
    let mut broken = 0;
    for _ in 0..30 {
        match h.c.get(&url).send().await {
            Ok(r) if r.status() == 200 => {
                if r.bytes().await.is_err() {
                    broken += 1;
                }
            }
            Ok(r) => assert!(r.status().is_server_error()),
            Err(_) => broken += 1,
        }
    }
    assert!(broken > 0);
    h.emu.set_faults(Faults::default());
    assert_eq!(
        h.c.get(&url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len(),
        200_000
    );
}

#[test]
fn background_emulator_for_sync_callers() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start_background(EmulatorConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    assert!(emu.api_url().starts_with("http://127.0.0.1:"));
    assert!(emu.token_helper_url().ends_with("/alist/ali_open/token"));
    let d = emu.seed_folder("root", "d");
    let f = emu.seed_pattern_file(&d, "p.bin", 3000, 11);
    assert_eq!(
        emu.file_sha1(&f),
        Some(hashing::sha1_hex(&pattern_bytes(11, 0, 3000)))
    );
    let tree = emu.tree();
    assert_eq!(
        tree.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["/d", "/d/p.bin"]
    );
    assert!(tree[1].sha1.is_some() && tree[0].is_dir && !tree[1].is_dir);
    assert_eq!(emu.drive_id("backup"), emu.drive_id("default"));
    assert_eq!(emu.calls().len(), 0);
    emu.shutdown();
}

#[test]
fn demo_tree_has_the_promised_items() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start_background(EmulatorConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    emu.seed_demo_tree();
    let tree = emu.tree();
    let find = |p: &str| {
        tree.iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p} missing"))
    };
    assert_eq!(find("/big-64MiB.bin").size, 64 << 20);
    assert!(find("/Videos").is_dir);
    assert!(find("/Videos/sample.mp4").size > 0);
    assert_eq!(
        find("/Documents/hello.txt").sha1.as_deref(),
        Some("2EF7BDE608CE5404E97D5F042F95F89F1C232871")
    );
}

#[test]
fn default_data_dir_is_private_and_removed() {
    let emu = Emulator::start_background(EmulatorConfig::default()).unwrap();
    let other = EmulatorConfig::default();
    let id = emu.seed_file("root", "a", b"abc");
    assert!(emu.file_sha1(&id).is_some());
    let dirs = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("alipanfs-emulator-{}-", std::process::id()))
            })
            .count()
    };
    assert!(dirs() >= 1);
    assert!(!other.data_dir.exists());
    let before = dirs();
    emu.shutdown();
    assert_eq!(dirs(), before - 1);
}

#[tokio::test]
async fn rapid_upload_works_across_drives_and_expiry_is_clamped() {
    let h = start(|_| {}).await;
    let content = b"content shared between drives".to_vec();
    h.emu.seed_file("root", "src.txt", &content);
    let res = h.emu.drive_id("resource").unwrap();
    let r = h
        .ok("openFile/create", json!({"drive_id": res, "parent_file_id": "root", "name": "dst.txt", "type": "file",
            "size": content.len(), "content_hash": hashing::sha1_hex(&content), "content_hash_name": "sha1",
            "proof_code": hashing::proof_code(&h.token, &content), "proof_version": "v1",
            "local_created_at": "2020-01-01T00:00:00.000Z"}))
        .await;
    assert_eq!(r["rapid_upload"], true);
    let o = h
        .ok(
            "openFile/get",
            json!({"drive_id": res, "file_id": r["file_id"]}),
        )
        .await;
    assert_eq!(o["drive_id"], json!(res));
    assert_eq!(o["local_created_at"], "2020-01-01T00:00:00.000Z");
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let exp_of = |u: &str| -> u64 {
        u.split("x-oss-expires=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let u = h
        .ok(
            "openFile/getDownloadUrl",
            json!({"drive_id": res, "file_id": r["file_id"], "expire_sec": 100000}),
        )
        .await;
    assert!((14399..=14401).contains(&(exp_of(u["url"].as_str().unwrap()) - unix())));
    h.emu.set_download_url_ttl_cap(Duration::from_secs(900));
    let u = h
        .ok(
            "openFile/getDownloadUrl",
            json!({"drive_id": res, "file_id": r["file_id"], "expire_sec": 14400}),
        )
        .await;
    let url = u["url"].as_str().unwrap();
    assert!((899..=901).contains(&(exp_of(url) - unix())));
    assert_eq!(u["expiration"].as_str().unwrap().len(), 24);
    assert_eq!(
        h.c.get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        content
    );
}

/// Starts an emulator persisting into `dir` on `port` (0: any), retrying while the previous
/// one still holds the port.
async fn start_persisted(dir: &std::path::Path, port: u16) -> Emulator {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cfg = EmulatorConfig {
            data_dir: dir.to_path_buf(),
            persist: true,
            rate_list_per_sec: 0.0,
            rate_download_url_per_sec: 0.0,
            rate_other_per_sec: 0.0,
            ..Default::default()
        };
        match Emulator::start(([127, 0, 0, 1], port).into(), cfg).await {
            Ok(emu) => return emu,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("emulator restart failed: {e}"),
        }
    }
}

#[tokio::test]
async fn a_persisted_drive_comes_back_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let emu = start_persisted(data.path(), 0).await;
    let port = emu.addr().port();
    let c = reqwest::Client::builder()
        .user_agent("alipanfs-tests")
        .build()
        .unwrap();
    let mut h = H {
        drive: emu.drive_id("default").unwrap(),
        emu,
        c,
        token: String::new(),
        refresh: String::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let r = h.refresh_with(&h.emu.refresh_token()).await;
    h.token = r.body["access_token"].as_str().unwrap().to_string();
    h.refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    let docs = h.mkdir("root", "docs").await;
    let kept = pattern_bytes(11, 0, 300_000);
    let a = h.upload(&docs, "a.bin", &kept, 100_000).await;
    let gone = h.upload("root", "gone.txt", b"to the bin", 100).await;
    h.ok(
        "openFile/recyclebin/trash",
        json!({"drive_id": h.drive, "file_id": gone["file_id"]}),
    )
    .await;
    h.c.post(h.url("/__emulator/quota"))
        .json(&json!({"total_bytes": 1u64 << 40}))
        .send()
        .await
        .unwrap();
    let url = download_url(&h, a["file_id"].as_str().unwrap(), 900).await;
    // An unfinished upload: part 1 of 2 sent.
    let b = h
        .ok("openFile/create", json!({"drive_id": h.drive, "parent_file_id": "root", "name": "half.bin",
            "type": "file", "size": 200, "part_info_list": [{"part_number": 1}, {"part_number": 2}]}))
        .await;
    let part_urls: Vec<String> = b["part_info_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["upload_url"].as_str().unwrap().to_string())
        .collect();
    let content = pattern_bytes(12, 0, 200);
    let r =
        h.c.put(&part_urls[0])
            .body(content[..100].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let tree = h.emu.tree();
    let refresh = h.emu.refresh_token();
    assert_eq!(refresh, h.refresh);

    h.emu.shutdown();
    h.emu = start_persisted(data.path(), port).await;
    h.c = reqwest::Client::builder()
        .user_agent("alipanfs-tests")
        .build()
        .unwrap();
    assert_eq!(h.emu.tree(), tree);
    // The client's tokens stay valid: the access token as is, the rotated refresh token once.
    assert_eq!(h.emu.refresh_token(), refresh);
    assert_eq!(h.call("user/getDriveInfo", json!({})).await.status, 200);
    assert_eq!(h.refresh_with(&refresh).await.status, 200);
    let space = h.ok("user/getSpaceInfo", json!({})).await;
    assert_eq!(space["personal_space_info"]["total_size"], 1u64 << 40);
    // A URL handed out before the restart still serves the body.
    let body = h.c.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(body.as_ref(), kept.as_slice());
    // The unfinished upload goes on where it stopped.
    let r =
        h.c.put(&part_urls[1])
            .body(content[100..].to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let done = h
        .ok(
            "openFile/complete",
            json!({"drive_id": h.drive, "file_id": b["file_id"], "upload_id": b["upload_id"]}),
        )
        .await;
    assert_eq!(
        done["content_hash"],
        hashing::sha1_of_reader(content.as_slice()).unwrap()
    );
}

#[tokio::test]
async fn unfinished_uploads_expire_with_their_parts() {
    let h = start(|c| c.upload_ttl = Duration::from_secs(1)).await;
    let b = h
        .ok("openFile/create", json!({"drive_id": h.drive, "parent_file_id": "root", "name": "slow.bin",
            "type": "file", "size": 20, "part_info_list": [{"part_number": 1}, {"part_number": 2}]}))
        .await;
    let parts = b["part_info_list"].as_array().unwrap().clone();
    let r =
        h.c.put(parts[0]["upload_url"].as_str().unwrap())
            .body(vec![1u8; 10])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let session =
        json!({"drive_id": h.drive, "file_id": b["file_id"], "upload_id": b["upload_id"]});
    let expired = wait_until(Duration::from_secs(10), || async {
        h.call("openFile/listUploadedParts", session.clone())
            .await
            .status
            == 400
    })
    .await;
    assert!(expired);
    assert_envelope(
        &h.call("openFile/listUploadedParts", session.clone()).await,
        400,
        "NotFound.UploadId",
    );
    let r =
        h.c.put(parts[1]["upload_url"].as_str().unwrap())
            .body(vec![2u8; 10])
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!h
        .dir
        .path()
        .join("uploads")
        .join(b["upload_id"].as_str().unwrap())
        .exists());
}
