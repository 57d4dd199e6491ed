//! The emulator's API surface over plain HTTP: OAuth, envelopes, lenient input, listing,
//! rate limits, admin endpoints and injected faults.

#[path = "emulator_support.rs"]
mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

#[tokio::test]
async fn refresh_rotates_and_a_used_token_is_refused() {
    let h = start(|_| {}).await;
    let initial_claims = h.token.split('.').count();
    assert_eq!(initial_claims, 3);
    // The initial refresh token was consumed by `start`: reuse is refused.
    let used = h.refresh_with("definitely.not.known").await;
    assert_envelope(&used, 400, "AccessDenied");
    let r = h.refresh_with(&h.refresh).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 7200);
    let new_rt = r.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(new_rt, h.refresh);
    assert_eq!(h.emu.refresh_token(), new_rt);
    let again = h.refresh_with(&h.refresh).await;
    assert_envelope(&again, 400, "AccessDenied");
    assert_eq!(again.body["message"], "invalid token");
    // Malformed refresh token.
    assert_envelope(&h.refresh_with("garbage").await, 400, "RefreshTokenInvalid");
    // The previous access token still works within the grace period, the new one too.
    let new_at = r.body["access_token"].as_str().unwrap();
    assert_eq!(h.call("user/getDriveInfo", json!({})).await.status, 200);
    assert_eq!(
        h.call_tok("user/getDriveInfo", new_at, json!({}))
            .await
            .status,
        200
    );
    assert_eq!(h.emu.call_count("oauth/access_token"), 5);
}

#[tokio::test]
async fn grace_period_ends_and_expiry_gives_401() {
    let h = start(|c| {
        c.access_token_grace = Duration::ZERO;
    })
    .await;
    let r = h.refresh_with(&h.refresh).await;
    assert_eq!(r.status, 200);
    // Zero grace: the superseded token is dead at once.
    assert_err(
        &h.call("user/getDriveInfo", json!({})).await,
        401,
        "AccessTokenExpired",
    );
    let tok = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(
        h.call_tok("user/getDriveInfo", &tok, json!({}))
            .await
            .status,
        200
    );
    // Expiry: a one-second token stops working.
    h.emu.set_access_token_ttl(Duration::from_secs(1));
    let r = h
        .refresh_with(r.body["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(r.body["expires_in"], 1);
    let short = r.body["access_token"].as_str().unwrap().to_string();
    let expired = wait_until(Duration::from_secs(4), || async {
        h.call_tok("user/getDriveInfo", &short, json!({}))
            .await
            .status
            == 401
    })
    .await;
    assert!(expired);
    assert_envelope(
        &h.call_tok("user/getDriveInfo", &short, json!({})).await,
        401,
        "AccessTokenExpired",
    );
}

#[tokio::test]
async fn bad_credentials_and_garbage_tokens() {
    let h = start(|_| {}).await;
    assert_err(
        &h.call_tok("user/getDriveInfo", "garbage", json!({})).await,
        401,
        "AccessTokenInvalid",
    );
    let r =
        h.c.post(h.url("/adrive/v1.0/user/getDriveInfo"))
            .send()
            .await
            .unwrap();
    assert_eq!(reply(r).await.body["code"], "AccessTokenInvalid");
    let post = |body: Value| {
        let c = h.c.clone();
        let url = h.url("/oauth/access_token");
        async move { reply(c.post(url).json(&body).send().await.unwrap()).await }
    };
    // Every OAuth error is the API envelope (code, message, requestId) plus `error`.
    let r = post(json!({"client_id": "other", "client_secret": SECRET, "grant_type": "refresh_token", "refresh_token": h.refresh})).await;
    assert_envelope(&r, 400, "InvalidClientId");
    assert_eq!(r.body["error"], "InvalidClientId: invalid client_id");
    let r = post(json!({"client_id": APP, "client_secret": "nope", "grant_type": "refresh_token", "refresh_token": h.refresh})).await;
    assert_envelope(&r, 400, "InvalidClientSecret");
    let r =
        post(json!({"client_id": APP, "client_secret": SECRET, "grant_type": "password"})).await;
    assert_envelope(&r, 400, "InvalidGrantType");
    let r = post(json!({"client_id": APP, "client_secret": SECRET, "grant_type": "authorization_code", "code": "x"})).await;
    assert_envelope(&r, 400, "InvalidCode");
    let r = post(
        json!({"client_id": APP, "client_secret": SECRET, "grant_type": "authorization_code"}),
    )
    .await;
    assert_envelope(&r, 400, "InvalidCode");
    let r = post(json!({"client_id": APP, "client_secret": SECRET, "grant_type": "refresh_token"}))
        .await;
    assert_envelope(&r, 400, "RefreshTokenInvalid");
    // A failed attempt did not consume the refresh token.
    assert_eq!(h.refresh_with(&h.refresh).await.status, 200);
}

#[tokio::test]
async fn form_bodies_helper_and_auth_codes() {
    let h = start(|_| {}).await;
    let form = format!(
        "client_id={APP}&client_secret={SECRET}&grant_type=refresh_token&refresh_token={}",
        h.refresh
    );
    let r =
        h.c.post(h.url("/oauth/access_token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let rt = r.body["refresh_token"].as_str().unwrap().to_string();
    // The alist-shaped helper: blank credentials, same rotation.
    let helper = |rt: String| {
        let c = h.c.clone();
        let url = h.emu.token_helper_url();
        async move {
            let body = json!({"client_id": "", "client_secret": "", "grant_type": "refresh_token", "refresh_token": rt});
            reply(c.post(url).json(&body).send().await.unwrap()).await
        }
    };
    let r = helper(rt.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_envelope(&helper(rt).await, 400, "AccessDenied");
    assert_envelope(&helper("garbage".into()).await, 400, "RefreshTokenInvalid");
    // The sub claim stays the user's across refreshes.
    assert_eq!(
        sub_of(r.body["access_token"].as_str().unwrap()),
        json!(h.emu.user_id())
    );
    // Authorization code grant.
    let code = h.emu.issue_auth_code();
    let r = h.c.post(h.url("/oauth/access_token"))
        .json(&json!({"client_id": APP, "client_secret": SECRET, "grant_type": "authorization_code", "code": code}))
        .send().await.unwrap();
    assert_eq!(r.status(), 200);
    // users/info
    let r = users_info(&h).await;
    assert_eq!(r.body["id"], json!(h.emu.user_id()));
    assert!(r.body["phone"].is_null());
}

/// `/oauth/users/info` with the harness's access token.
async fn users_info(h: &H) -> Reply {
    reply(
        h.c.get(h.url("/oauth/users/info"))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The `sub` claim of a JWT-shaped token.
fn sub_of(token: &str) -> Value {
    use base64::Engine;
    let p = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["sub"].clone()
}

#[tokio::test]
async fn a_jwt_bootstrap_token_names_the_user() {
    use base64::Engine;
    let b64 = |v: Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    let user = "0123456789abcdef0123456789abcdef";
    let bootstrap = format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(json!({"typ": "JWT", "alg": "HS256"})),
        b64(json!({"sub": user, "aud": APP, "exp": 4_000_000_000u64, "iat": 1_700_000_000u64}))
    );
    let bt = bootstrap.clone();
    let h = start(move |c| c.refresh_token = Some(bt)).await;
    assert_eq!(h.emu.user_id(), user);
    // `start` spent the bootstrap token; every token since then names the same user.
    assert_eq!(sub_of(&h.token), json!(user));
    assert_eq!(sub_of(&h.refresh), json!(user));
    let mut rt = h.refresh.clone();
    for _ in 0..3 {
        let r = h.refresh_with(&rt).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            sub_of(r.body["access_token"].as_str().unwrap()),
            json!(user)
        );
        rt = r.body["refresh_token"].as_str().unwrap().to_string();
        assert_eq!(sub_of(&rt), json!(user));
    }
    let info = users_info(&h).await;
    assert_eq!(info.body["id"], user);
    // The real client, which refuses a refresh that changes `sub`, signs in and names the user.
    let state = tempfile::tempdir().unwrap();
    // An empty config file, so no user config on this machine takes part.
    std::fs::write(state.path().join("none.toml"), "").unwrap();
    let mut args: Vec<String> = vec!["about".into()];
    args.extend(h.emu.mount_args());
    args.push("--token-file".into());
    args.push(state.path().join("token.json").display().to_string());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_alipanfs"))
        .args(&args)
        .env("ALIPANFS_REFRESH_TOKEN", &rt)
        .env("ALIPANFS_CONFIG", state.path().join("none.toml"))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("user:") && l.contains(user)),
        "{stdout}"
    );
}

#[tokio::test]
async fn drive_info_space_info_and_lenient_input() {
    let h = start(|_| {}).await;
    // Empty body, `{}`, unknown fields, nulls.
    let r =
        h.c.post(h.url("/adrive/v1.0/user/getDriveInfo"))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["default_drive_id"], "9600002");
    assert_eq!(r.body["resource_drive_id"], "9600003");
    assert_eq!(r.body["user_id"].as_str().unwrap().len(), 32);
    h.emu.seed_file("root", "a.txt", b"hello");
    let s = h
        .ok(
            "user/getSpaceInfo",
            json!({"drive_id": null, "whatever": [1, 2]}),
        )
        .await;
    assert_eq!(s["personal_space_info"]["used_size"], 5);
    assert_eq!(s["personal_space_info"]["total_size"], 6u64 << 40);
    let l = h
        .ok(
            "openFile/list",
            json!({"drive_id": h.drive, "parent_file_id": "root", "limit": null, "marker": null,
            "order_by": "", "order_direction": "", "fields": "*", "unknown": {"x": 1}}),
        )
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    let bad =
        h.c.post(h.url("/adrive/v1.0/openFile/list"))
            .bearer_auth(&h.token)
            .body("{not json")
            .send()
            .await
            .unwrap();
    assert_err(&reply(bad).await, 400, "InvalidParameter");
    // Unknown path: Spring-style 404; wrong method: 405.
    let r = reply(
        h.c.post(h.url("/adrive/v1.0/openFile/nope"))
            .bearer_auth(&h.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], "Not Found");
    assert_eq!(r.body["path"], "/adrive/v1.0/openFile/nope");
    let r = reply(
        h.c.get(h.url("/adrive/v1.0/openFile/list"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn pagination_of_1050_items_is_stable_under_concurrent_changes() {
    let h = start(|_| {}).await;
    let dir = h.emu.seed_folder("root", "many");
    let mut ids = Vec::new();
    for i in 0..1050 {
        ids.push(h.emu.seed_file(&dir, &format!("f{i:05}"), b""));
    }
    let mut marker = String::new();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = h.ok("openFile/list", json!({"drive_id": h.drive, "parent_file_id": dir, "limit": 200, "marker": marker, "order_by": "name", "order_direction": "ASC"})).await;
        let items = r["items"].as_array().unwrap();
        assert!(items.len() <= 100);
        seen.extend(
            items
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string()),
        );
        pages += 1;
        if pages == 3 {
            // Deletes and inserts between pages neither repeat nor skip survivors.
            h.ok(
                "openFile/delete",
                json!({"drive_id": h.drive, "file_id": ids[10]}),
            )
            .await;
            h.ok(
                "openFile/delete",
                json!({"drive_id": h.drive, "file_id": ids[900]}),
            )
            .await;
            h.emu.seed_file(&dir, "f00000a", b"");
            h.emu.seed_file(&dir, "zzz", b"");
        }
        marker = r["next_marker"].as_str().unwrap().to_string();
        if marker.is_empty() {
            break;
        }
    }
    assert_eq!(pages, 11);
    let mut expected: Vec<String> = (0..1050)
        .filter(|i| *i != 900)
        .map(|i| format!("f{i:05}"))
        .collect();
    expected.push("zzz".into());
    assert_eq!(seen, expected);
    // Default limit is 50; DESC by size and type filters work; over 200 is refused.
    let r = h
        .ok(
            "openFile/list",
            json!({"drive_id": h.drive, "parent_file_id": dir}),
        )
        .await;
    assert_eq!(r["items"].as_array().unwrap().len(), 50);
    assert_err(
        &h.call(
            "openFile/list",
            json!({"drive_id": h.drive, "parent_file_id": dir, "limit": 201}),
        )
        .await,
        400,
        "InvalidParameter.Limit",
    );
    assert_err(
        &h.call(
            "openFile/list",
            json!({"drive_id": h.drive, "parent_file_id": dir, "marker": "bogus"}),
        )
        .await,
        400,
        "InvalidParameter.Marker",
    );
    let r = h
        .ok(
            "openFile/list",
            json!({"drive_id": h.drive, "parent_file_id": "root", "type": "file"}),
        )
        .await;
    assert_eq!(r["items"], json!([]));
}

#[tokio::test]
async fn ordering_options() {
    let h = start(|_| {}).await;
    h.emu.seed_file("root", "b10", b"123");
    h.emu.seed_file("root", "b9", b"1");
    h.emu.seed_folder("root", "a");
    let names = |v: Vec<Value>| {
        v.iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(h.list_all("root", json!({"order_by": "name"})).await),
        ["a", "b10", "b9"]
    );
    assert_eq!(
        names(
            h.list_all("root", json!({"order_by": "name_enhanced"}))
                .await
        ),
        ["a", "b9", "b10"]
    );
    assert_eq!(
        names(
            h.list_all(
                "root",
                json!({"order_by": "size", "order_direction": "DESC"})
            )
            .await
        ),
        ["b10", "b9", "a"]
    );
    assert_eq!(
        names(h.list_all("root", json!({"type": "folder"})).await),
        ["a"]
    );
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let h = start(|c| {
        c.rate_list_per_sec = 4.0;
    })
    .await;
    let body = json!({"drive_id": h.drive, "parent_file_id": "root"});
    let mut limited = None;
    for _ in 0..10 {
        let r = h.call("openFile/list", body.clone()).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("no 429 after 10 rapid list calls at 4/s");
    assert_envelope(&r, 429, "TooManyRequests");
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("x-retry-after"));
    let wait: u64 = r.headers["x-retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=250).contains(&wait), "{wait}");
    // Other classes have their own buckets.
    assert_eq!(h.call("user/getDriveInfo", json!({})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(wait + 20)).await;
    assert_eq!(h.call("openFile/list", body.clone()).await.status, 200);
    // Forced 429s.
    h.emu.set_rate_limits(0.0, 0.0, 0.0);
    h.emu.force_429(2);
    assert_eq!(h.call("user/getDriveInfo", json!({})).await.status, 429);
    assert_eq!(h.call("user/getDriveInfo", json!({})).await.status, 429);
    assert_eq!(h.call("user/getDriveInfo", json!({})).await.status, 200);
}

#[tokio::test]
async fn admin_endpoints_and_injected_faults() {
    let h = start(|_| {}).await;
    h.emu.reset_calls();
    h.ok("user/getDriveInfo", json!({})).await;
    let calls: Value =
        h.c.get(h.url("/__emulator/calls"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(calls["user/getDriveInfo"], 1);
    let r: Value =
        h.c.post(h.url("/__emulator/seed"))
            .json(&json!({"parent_file_id": "root", "name": "p.bin", "size": 5000, "seed": 3}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let id = r["file_id"].as_str().unwrap();
    let expect = alipanfs::hashing::sha1_hex(&alipanfs::emulator::pattern_bytes(3, 0, 5000));
    assert_eq!(h.emu.file_sha1(id), Some(expect));
    let tree: Value =
        h.c.get(h.url("/__emulator/tree"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(tree[0]["path"], "/p.bin");
    // Every API request fails: some 500s with JSON or HTML, some dropped connections.
    let r =
        h.c.post(h.url("/__emulator/faults"))
            .json(&json!({"failure_rate": 1.0}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let (mut s500, mut dropped) = (0, 0);
    for _ in 0..30 {
        match h
            .c
            .post(h.url("/adrive/v1.0/user/getDriveInfo"))
            .bearer_auth(&h.token)
            .send()
            .await
        {
            Ok(r) if r.status() == 500 => s500 += 1,
            Ok(r) => match r.bytes().await {
                Err(_) => dropped += 1,
                Ok(b) => panic!("unexpected success {b:?}"),
            },
            Err(_) => dropped += 1,
        }
    }
    assert!(s500 > 0 && dropped > 0, "{s500} {dropped}");
    h.c.post(h.url("/__emulator/faults"))
        .json(&json!({"xml_error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    let r = h.call("user/getDriveInfo", json!({})).await;
    assert_eq!(r.status, 502);
    assert!(r.body.as_str().unwrap().starts_with('<'));
    h.c.post(h.url("/__emulator/faults"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    h.c.post(h.url("/__emulator/force_429"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(h.call("user/getDriveInfo", json!({})).await.status, 429);
    h.c.post(h.url("/__emulator/quota"))
        .json(&json!({"total_bytes": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        h.ok("user/getSpaceInfo", json!({})).await["personal_space_info"]["total_size"],
        1
    );
}

#[tokio::test]
async fn run_cli_serves_until_stopped() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = alipanfs::emulator::EmulatorConfig {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    let task = tokio::spawn(alipanfs::emulator::run_cli(
        ([127, 0, 0, 1], port).into(),
        cfg,
        false,
    ));
    let c = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/__emulator/calls");
    let up = wait_until(Duration::from_secs(5), || {
        let c = c.clone();
        let url = url.clone();
        async move { c.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(up);
    task.abort();
}
