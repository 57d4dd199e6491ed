//! The client against a scripted HTTP server on 127.0.0.1: exact control over statuses,
//! headers and bodies the emulator does not produce on demand (HTML gateways, token mix-ups,
//! odd ranges). The emulator-backed tests live in `api_emulator.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use alipanfs::api::{Client, ClientConfig, RateLimits, RetryPolicy, TokenStore};
use alipanfs::drive::{CheckNameMode, DownloadUrl, Drive, NewFile, PartUrl, UploadHashes};
use alipanfs::error::Error;
use alipanfs::hashing;
use axum::body::Body;
use axum::http::HeaderMap;
use base64::Engine;
use bytes::Bytes;

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Seen {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    fn bearer(&self) -> String {
        self.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string()
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Held back this long before answering (to provoke client timeouts).
    delay: Duration,
}

fn json_reply(status: u16, v: serde_json::Value) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: v.to_string().into_bytes(),
        delay: Duration::ZERO,
    }
}

fn raw(status: u16, body: &str) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
        delay: Duration::ZERO,
    }
}

type Script = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

struct Mock {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _dir: tempfile::TempDir,
    store: std::path::PathBuf,
}

impl Mock {
    /// `script(request, index of this request among those to the same path)`.
    async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Mock {
        let script: Script = Arc::new(script);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let seen2 = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let script = script.clone();
            let seen = seen2.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let s = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    headers: parts.headers,
                    body,
                    at: Instant::now(),
                };
                let n = {
                    let mut v = seen.lock().unwrap();
                    let n = v.iter().filter(|x| x.path == s.path).count();
                    v.push(s.clone());
                    n
                };
                let r = script(&s, n);
                if !r.delay.is_zero() {
                    tokio::time::sleep(r.delay).await;
                }
                let mut b = axum::http::Response::builder().status(r.status);
                for (k, v) in r.headers {
                    b = b.header(k, v);
                }
                b.body(Body::from(r.body)).unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("tokens.json");
        Mock {
            base: format!("http://{addr}"),
            seen,
            _dir: dir,
            store,
        }
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.store.clone());
        c.api_url = self.base.clone();
        c.token_url = format!("{}/alist/ali_open/token", self.base);
        c.refresh_token = Some(jwt("user-1", "r0"));
        c.limits = RateLimits {
            list_per_sec: 0.0,
            download_url_per_sec: 0.0,
            other_per_sec: 0.0,
        };
        c.retry = RetryPolicy {
            max_attempts: 4,
            budget: Duration::from_secs(5),
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        };
        c.request_timeout = Duration::from_secs(5);
        c
    }

    fn seen(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

fn jwt(sub: &str, jti: &str) -> String {
    let enc = |s: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.sig",
        enc(r#"{"alg":"HS256","typ":"JWT"}"#.into()),
        enc(format!(r#"{{"sub":"{sub}","jti":"{jti}"}}"#))
    )
}

const TOKEN: &str = "/alist/ali_open/token";
const DRIVE_INFO: &str = "/adrive/v1.0/user/getDriveInfo";

/// Token endpoint handing out access tokens "a1", "a2", ... for user-1.
fn token_reply(n: usize) -> Reply {
    json_reply(
        200,
        serde_json::json!({
            "token_type": "Bearer",
            "access_token": jwt("user-1", &format!("a{}", n + 1)),
            "refresh_token": jwt("user-1", &format!("r{}", n + 1)),
            "expires_in": 7200,
        }),
    )
}

fn drive_info_reply() -> Reply {
    json_reply(
        200,
        serde_json::json!({"user_id":"user-1","name":"n","default_drive_id":"100","resource_drive_id":"200"}),
    )
}

#[tokio::test]
async fn helper_refresh_is_persisted_and_drive_choice_applies() {
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => token_reply(n),
        DRIVE_INFO => drive_info_reply(),
        _ => raw(404, ""),
    })
    .await;
    let mut cfg = m.config();
    cfg.drive = alipanfs::drive::DriveChoice::Resource;
    let c = Client::new(cfg).unwrap();
    let info = c.init().await.unwrap();
    assert_eq!(info.drive_id, "200");
    assert_eq!(c.drive_id().as_deref(), Some("200"));
    // The helper got the alist shape: blank app credentials.
    let req = m.seen(TOKEN)[0].json();
    assert_eq!(req["client_id"], "");
    assert_eq!(req["grant_type"], "refresh_token");
    assert_eq!(req["refresh_token"], jwt("user-1", "r0"));
    // Rotation on disk before use.
    let store = TokenStore::load(&m.store).unwrap();
    assert_eq!(store.refresh_token, Some(jwt("user-1", "r1")));
    assert_eq!(store.access_token, Some(jwt("user-1", "a1")));
    assert_eq!(store.user_id.as_deref(), Some("user-1"));
    assert_eq!(m.seen(DRIVE_INFO)[0].bearer(), jwt("user-1", "a1"));
    assert_eq!(c.token_status().user_id.as_deref(), Some("user-1"));
    assert_eq!(c.refresh_count(), 1);

    // A second client from the store alone reuses the access token: no refresh.
    let mut cfg = m.config();
    cfg.refresh_token = None;
    let c2 = Client::new(cfg).unwrap();
    c2.init().await.unwrap();
    assert_eq!(c2.refresh_count(), 0);
    assert_eq!(m.seen(TOKEN).len(), 1);
}

#[tokio::test]
async fn token_of_another_user_is_refused_and_old_tokens_kept() {
    let m = Mock::start(|s, _| match s.path.as_str() {
        TOKEN => json_reply(
            200,
            serde_json::json!({"access_token": jwt("intruder", "a"), "refresh_token": jwt("intruder", "r"), "expires_in": 7200}),
        ),
        _ => raw(404, ""),
    })
    .await;
    TokenStore {
        refresh_token: Some(jwt("user-1", "r0")),
        user_id: Some("user-1".into()),
        ..Default::default()
    }
    .save(&m.store)
    .unwrap();
    let c = Client::new(m.config()).unwrap();
    match c.access_token().await {
        Err(Error::SignIn(msg)) => assert!(msg.contains("another user"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let store = TokenStore::load(&m.store).unwrap();
    assert_eq!(store.refresh_token, Some(jwt("user-1", "r0")));
    assert_eq!(c.refresh_count(), 0);
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_replayed_once() {
    // getSpaceInfo refuses the first token, accepts the second; getDriveInfo always refuses.
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => token_reply(n),
        "/adrive/v1.0/user/getSpaceInfo" if s.bearer() == jwt("user-1", "a1") => json_reply(
            401,
            serde_json::json!({"code":"AccessTokenExpired","message":"expired","requestId":"x"}),
        ),
        "/adrive/v1.0/user/getSpaceInfo" => json_reply(
            200,
            serde_json::json!({"personal_space_info":{"used_size":5,"total_size":"10"}}),
        ),
        DRIVE_INFO => json_reply(400, serde_json::json!({"code":"I400JD","message":"?"})),
        _ => raw(404, ""),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    let s = c.space_info().await.unwrap();
    assert_eq!((s.used_bytes, s.total_bytes), (5, 10));
    assert_eq!(c.refresh_count(), 2); // the first access token, then the replacement
    assert_eq!(m.seen("/adrive/v1.0/user/getSpaceInfo").len(), 2);
    // Refused even after a refresh: one replay, then Unauthorized, no loop.
    assert!(matches!(c.drive_info().await, Err(Error::Unauthorized(_))));
    assert_eq!(m.seen(DRIVE_INFO).len(), 2);
    assert_eq!(c.refresh_count(), 3);
}

#[tokio::test]
async fn refused_refresh_token_and_bad_secret_are_sign_in_errors() {
    let m = Mock::start(|s, _| match s.path.as_str() {
        TOKEN => json_reply(
            400,
            serde_json::json!({"code":"AccessDenied","message":"invalid token"}),
        ),
        "/oauth/access_token" => json_reply(
            401,
            serde_json::json!({"code":"InvalidClientSecret","message":"invalid client_secret"}),
        ),
        _ => raw(404, ""),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    for _ in 0..3 {
        match c.init().await {
            Err(Error::SignIn(msg)) => assert!(msg.contains("alipanfs token set"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
    // A refused refresh token is not presented again.
    assert_eq!(m.seen(TOKEN).len(), 1);
    let mut cfg = m.config();
    cfg.client_id = Some("app".into());
    cfg.client_secret = Some("wrong".into());
    let c = Client::new(cfg).unwrap();
    match c.init().await {
        Err(Error::SignIn(msg)) => assert!(msg.contains("client_secret"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let req = m.seen("/oauth/access_token")[0].json();
    assert_eq!(req["client_id"], "app");
    assert_eq!(req["client_secret"], "wrong");
}

#[tokio::test]
async fn token_set_while_running_recovers_from_a_refused_token() {
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN if s.json()["refresh_token"] == jwt("user-1", "fresh") => token_reply(n),
        TOKEN => json_reply(
            400,
            serde_json::json!({"code":"AccessDenied","message":"invalid token"}),
        ),
        DRIVE_INFO => drive_info_reply(),
        _ => raw(404, ""),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    assert!(matches!(c.init().await, Err(Error::SignIn(_))));
    alipanfs::api::store_refresh_token(&m.store, &jwt("user-1", "fresh")).unwrap();
    assert_eq!(c.init().await.unwrap().drive_id, "100");
    assert_eq!(m.seen(TOKEN).len(), 2);
    assert_eq!(
        TokenStore::load(&m.store).unwrap().refresh_token,
        Some(jwt("user-1", "r2"))
    );
}

#[tokio::test]
async fn gateway_errors_are_retried_then_typed() {
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => token_reply(n),
        DRIVE_INFO if n < 2 => raw(502, "<html><body>502 Bad Gateway</body></html>"),
        DRIVE_INFO => drive_info_reply(),
        "/adrive/v1.0/user/getSpaceInfo" => raw(503, ""),
        "/adrive/v1.0/openFile/get" => raw(200, "<?xml version=\"1.0\"?><oops/>"),
        _ => raw(404, ""),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    assert_eq!(c.init().await.unwrap().drive_id, "100");
    assert_eq!(m.seen(DRIVE_INFO).len(), 3);
    match c.space_info().await {
        Err(Error::Api { status: 503, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(m.seen("/adrive/v1.0/user/getSpaceInfo").len(), 4); // max_attempts
    assert!(matches!(c.get("x").await, Err(Error::BadResponse(_))));
}

#[tokio::test]
async fn throttling_waits_for_x_retry_after() {
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => token_reply(n),
        DRIVE_INFO if n < 2 => Reply {
            status: 429,
            headers: vec![("x-retry-after", "300".into())],
            body: br#"{"code":"TooManyRequests","message":"wait"}"#.to_vec(),
            delay: Duration::ZERO,
        },
        DRIVE_INFO => drive_info_reply(),
        _ => raw(404, ""),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    c.init().await.unwrap();
    let seen = m.seen(DRIVE_INFO);
    assert_eq!(seen.len(), 3);
    for w in seen.windows(2) {
        assert!(w[1].at - w[0].at >= Duration::from_millis(300));
    }
}

#[tokio::test]
async fn proof_code_follows_the_token_that_sends_the_create() {
    let content = b"Hello World! and some more bytes to make it longer".to_vec();
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => token_reply(n),
        DRIVE_INFO => drive_info_reply(),
        "/adrive/v1.0/openFile/create" if n == 0 => {
            json_reply(401, serde_json::json!({"code":"AccessTokenInvalid","message":"x"}))
        }
        "/adrive/v1.0/openFile/create" => json_reply(
            200,
            serde_json::json!({"file_id":"f1","file_name":"h.txt","upload_id":"U1","rapid_upload":true,"exist":false}),
        ),
        _ => raw(404, ""),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("h.txt");
    std::fs::write(&local, &content).unwrap();
    let c = Client::new(m.config()).unwrap();
    let s = c
        .create_file(&NewFile {
            parent_file_id: "root".into(),
            name: "h.txt".into(),
            size: Some(content.len() as u64),
            check_name_mode: CheckNameMode::Refuse,
            part_count: 1,
            local_modified_at: Some(SystemTime::now()),
            hashes: UploadHashes::Full {
                content_hash: hashing::sha1_hex(&content),
                local_file: local,
            },
        })
        .await
        .unwrap();
    assert!(s.rapid_upload);
    assert!(s.parts.is_empty());
    let creates = m.seen("/adrive/v1.0/openFile/create");
    assert_eq!(creates.len(), 2);
    for req in &creates {
        assert_eq!(
            req.json()["proof_code"],
            hashing::proof_code(&req.bearer(), &content),
            "proof computed with the sending token"
        );
    }
    assert_ne!(creates[0].bearer(), creates[1].bearer());
    assert_eq!(creates[1].json()["drive_id"], "100");
}

#[tokio::test]
async fn listing_pages_until_marker_is_missing_and_trash_tolerates_gone() {
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => token_reply(n),
        DRIVE_INFO => drive_info_reply(),
        "/adrive/v1.0/openFile/list" => {
            let marker = s.json()["marker"].as_str().unwrap_or("").to_string();
            match marker.as_str() {
                "" => json_reply(200, serde_json::json!({"items":[{"file_id":"a","name":"a","type":"folder","size":null}],"next_marker":"m1"})),
                "m1" => json_reply(200, serde_json::json!({"items":[{"file_id":"b","name":"b","type":"file","size":3,"trashed":true},{"file_id":"c","name":"c","type":"file","size":4}],"next_marker":null})),
                _ => raw(500, ""),
            }
        }
        "/adrive/v1.0/openFile/recyclebin/trash" => {
            json_reply(404, serde_json::json!({"code":"NotFound.FileId","message":"gone"}))
        }
        "/adrive/v1.0/openFile/delete" => raw(204, ""),
        _ => raw(404, ""),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    let items = c.list_folder("root").await.unwrap();
    let names: Vec<_> = items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(items[0].parent_file_id, "root");
    let list = m.seen("/adrive/v1.0/openFile/list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].json()["limit"], 100);
    assert_eq!(c.trash("gone").await.unwrap().file_id, "gone");
    assert_eq!(c.delete("x").await.unwrap().async_task_id, None);
}

fn data_url(m: &Mock) -> DownloadUrl {
    DownloadUrl {
        url: format!(
            "{}/data/obj?x-oss-expires=9999999999&x-oss-signature=s",
            m.base
        ),
        expires_at: SystemTime::now() + Duration::from_secs(60),
    }
}

#[tokio::test]
async fn ranged_download_checks_status_and_content_range() {
    let object: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let obj = object.clone();
    let m = Mock::start(move |s, _| {
        let range = s.headers.get("range").and_then(|v| v.to_str().ok()).unwrap_or("");
        let (a, b) = range
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()))
            .unwrap();
        match a {
            900 => Reply {
                status: 206,
                headers: vec![("content-range", format!("bytes {a}-999/1000"))],
                body: obj[a..].to_vec(),
                delay: Duration::ZERO,
            },
            0 => raw(200, std::str::from_utf8(&[b'z'; 50]).unwrap()),
            1000 => raw(416, "<Error><Code>InvalidRange</Code></Error>"),
            1 => raw(200, "whole object"),
            2 => Reply {
                status: 206,
                headers: vec![("content-range", "bytes 3-5/1000".into())],
                body: b"abc".to_vec(),
                delay: Duration::ZERO,
            },
            3 => raw(403, "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Request has expired.</Message></Error>"),
            4 => raw(403, "<Error><Code>RequestDeniedByCallback</Code><Message>Callback deny this request reason: ExceedMaxConcurrency</Message></Error>"),
            _ => Reply {
                status: 206,
                headers: vec![("content-range", format!("bytes {a}-{b}/1000"))],
                body: obj[a..=b].to_vec(),
                delay: Duration::ZERO,
            },
        }
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    let u = data_url(&m);
    assert_eq!(
        &c.download_range(&u, 10, 100).await.unwrap()[..],
        &object[10..110]
    );
    // Short only at end of file.
    assert_eq!(
        &c.download_range(&u, 900, 500).await.unwrap()[..],
        &object[900..]
    );
    assert_eq!(c.download_range(&u, 0, 20).await.unwrap().len(), 20);
    assert!(c.download_range(&u, 1000, 10).await.unwrap().is_empty());
    assert!(matches!(
        c.download_range(&u, 1, 10).await,
        Err(Error::BadResponse(_))
    ));
    assert!(matches!(
        c.download_range(&u, 2, 10).await,
        Err(Error::BadResponse(_))
    ));
    assert!(matches!(
        c.download_range(&u, 3, 10).await,
        Err(Error::UrlExpired)
    ));
    assert!(matches!(
        c.download_range(&u, 4, 10).await,
        Err(Error::ExceedMaxConcurrency)
    ));
    assert!(c.download_range(&u, 5, 0).await.unwrap().is_empty());
    let seen = m.seen("/data/obj");
    assert_eq!(seen[0].headers["range"], "bytes=10-109");
    assert_eq!(seen[0].headers["x-oss-range-behavior"], "standard");
    assert!(seen[0].headers.get("authorization").is_none());
    assert!(m.seen(TOKEN).is_empty(), "the data plane needs no token");
}

#[tokio::test]
async fn part_upload_sends_no_content_type_and_maps_oss_errors() {
    let m = Mock::start(|s, _| match s.path.as_str() {
        p if p.ends_with("/1") => Reply {
            status: 200,
            headers: vec![("etag", "\"E1\"".into())],
            body: vec![],
            delay: Duration::ZERO,
        },
        p if p.ends_with("/2") => raw(409, "<Error><Code>PartAlreadyExist</Code></Error>"),
        p if p.ends_with("/3") => raw(400, "<Error><Code>PartNotSequential</Code></Error>"),
        p if p.ends_with("/4") => raw(404, "<Error><Code>NoSuchUpload</Code></Error>"),
        _ => raw(
            403,
            "<Error><Code>AccessDenied</Code><Message>Request has expired.</Message></Error>",
        ),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    let part = |n: u32| PartUrl {
        part_number: n,
        upload_url: format!("{}/upload/{n}?x-oss-expires=1", m.base),
        expires_at: None,
    };
    let body = Bytes::from_static(b"part bytes");
    assert_eq!(
        c.upload_part(&part(1), body.clone())
            .await
            .unwrap()
            .as_deref(),
        Some("\"E1\"")
    );
    let put = &m.seen("/upload/1")[0];
    assert_eq!(put.method, "PUT");
    assert!(put.headers.get("content-type").is_none());
    assert_eq!(put.headers["content-length"], "10");
    assert_eq!(&put.body[..], b"part bytes");
    assert!(matches!(
        c.upload_part(&part(2), body.clone()).await,
        Err(Error::PartAlreadyExist)
    ));
    assert!(matches!(
        c.upload_part(&part(3), body.clone()).await,
        Err(Error::PartNotSequential)
    ));
    assert!(matches!(
        c.upload_part(&part(4), body.clone()).await,
        Err(Error::NoSuchUpload(_))
    ));
    assert!(matches!(
        c.upload_part(&part(5), body).await,
        Err(Error::UrlExpired)
    ));
}

#[tokio::test]
async fn concurrent_callers_share_one_refresh() {
    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => {
            std::thread::sleep(Duration::from_millis(50));
            token_reply(n)
        }
        "/adrive/v1.0/user/getSpaceInfo" => json_reply(
            200,
            serde_json::json!({"personal_space_info":{"used_size":1,"total_size":2}}),
        ),
        _ => raw(404, ""),
    })
    .await;
    let c = Arc::new(Client::new(m.config()).unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.space_info().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(m.seen(TOKEN).len(), 1);
    assert_eq!(c.refresh_count(), 1);
}

fn new_file(name: &str) -> NewFile {
    NewFile {
        parent_file_id: "root".into(),
        name: name.into(),
        size: Some(10),
        check_name_mode: CheckNameMode::Ignore,
        part_count: 1,
        local_modified_at: None,
        hashes: UploadHashes::None,
    }
}

#[tokio::test]
async fn create_file_is_replayed_only_when_it_surely_did_not_land() {
    const CREATE: &str = "/adrive/v1.0/openFile/create";
    let m = Mock::start(|s, n| {
        let name = s.json()["name"].as_str().unwrap_or("").to_string();
        match (s.path.as_str(), name.as_str()) {
            (TOKEN, _) => token_reply(n),
            (DRIVE_INFO, _) => drive_info_reply(),
            // Answers too late: the client times out, the server may have created it.
            (CREATE, "slow") => Reply {
                delay: Duration::from_millis(1500),
                ..json_reply(200, serde_json::json!({"file_id":"late","upload_id":"U"}))
            },
            // A 5xx means nothing was created: safe to replay.
            (CREATE, "flaky") if n == 1 => raw(500, "<html>oops</html>"),
            (CREATE, _) => json_reply(
                200,
                serde_json::json!({"file_id":"f","file_name":name,"upload_id":"U","part_info_list":[{"part_number":1,"upload_url":"http://h/u?x-oss-expires=100"}]}),
            ),
            ("/adrive/v1.0/openFile/get", _) => Reply {
                delay: if n == 0 { Duration::from_millis(1500) } else { Duration::ZERO },
                ..json_reply(200, serde_json::json!({"file_id":"g","name":"g","type":"file","size":1}))
            },
            _ => raw(404, ""),
        }
    })
    .await;
    let mut cfg = m.config();
    cfg.request_timeout = Duration::from_millis(500);
    let c = Client::new(cfg).unwrap();
    c.init().await.unwrap();
    assert!(matches!(
        c.create_file(&new_file("slow")).await,
        Err(Error::Network(_))
    ));
    assert_eq!(
        m.seen(CREATE).len(),
        1,
        "a create that may have landed is not replayed"
    );
    let s = c.create_file(&new_file("flaky")).await.unwrap();
    assert_eq!(s.parts[0].part_number, 1);
    assert_eq!(
        s.parts[0].expires_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(100))
    );
    assert_eq!(m.seen(CREATE).len(), 3);
    // An idempotent read is replayed after a timeout.
    assert_eq!(c.get("g").await.unwrap().name, "g");
    assert_eq!(m.seen("/adrive/v1.0/openFile/get").len(), 2);
}

#[tokio::test]
async fn corrupt_token_store_is_a_clear_error_at_start() {
    let m = Mock::start(|_, _| raw(404, "")).await;
    std::fs::write(&m.store, "{ not json").unwrap();
    match Client::new(m.config()) {
        Err(Error::TokenStore { path, message }) => {
            assert_eq!(path, m.store.display().to_string());
            assert!(message.contains("corrupt"), "{message}");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a corrupt store must not be ignored"),
    }
    assert!(m.seen(TOKEN).is_empty());
}

/// Log sink for `logs_never_carry_tokens_or_signatures`.
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_carry_tokens_or_signatures() {
    let buf = LogBuf::default();
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let m = Mock::start(|s, n| match s.path.as_str() {
        TOKEN => token_reply(n),
        DRIVE_INFO if n == 0 => json_reply(401, serde_json::json!({"code":"AccessTokenExpired"})),
        DRIVE_INFO => drive_info_reply(),
        "/data/obj" => raw(
            403,
            "<Error><Code>AccessDenied</Code><Message>Request has expired.</Message></Error>",
        ),
        _ => raw(500, ""),
    })
    .await;
    let c = Client::new(m.config()).unwrap();
    c.init().await.unwrap();
    let url = data_url(&m);
    assert!(c.download_range(&url, 0, 10).await.is_err());
    let part = PartUrl {
        part_number: 1,
        upload_url: format!("{}/upload/1?x-oss-signature=s", m.base),
        expires_at: None,
    };
    assert!(c
        .upload_part(&part, Bytes::from_static(b"x"))
        .await
        .is_err());

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("user/getDriveInfo"),
        "logging was captured: {logs}"
    );
    assert!(logs.contains("/data/obj?<redacted>"), "{logs}");
    for secret in [
        jwt("user-1", "r0"),
        jwt("user-1", "a1"),
        jwt("user-1", "r1"),
        jwt("user-1", "a2"),
        "x-oss-signature".to_string(),
    ] {
        assert!(!logs.contains(&secret), "leaked {secret}");
    }
}
