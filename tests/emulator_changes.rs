//! The emulator's change-finding surface over plain HTTP: `openFile/search` (grammar, order,
//! paging, total count, the recycle bin left out), the optional delta feed, and changes made as
//! another device through the admin endpoints.

#[path = "emulator_support.rs"]
mod support;

use serde_json::{json, Value};
use support::*;

fn names(items: &Value) -> Vec<String> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

async fn admin(h: &H, path: &str, body: Value) -> Value {
    let r =
        h.c.post(h.url(&format!("/__emulator/{path}")))
            .json(&body)
            .send()
            .await
            .unwrap();
    let r = reply(r).await;
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

#[tokio::test]
async fn search_filters_orders_pages_and_counts() {
    let h = start(|_| {}).await;
    let docs = h.mkdir("root", "docs").await;
    for (i, n) in ["a.mp4", "b.txt", "c.mp4", "report 2024.pdf"]
        .iter()
        .enumerate()
    {
        let id = h.emu.seed_file(&docs, n, n.as_bytes());
        h.emu
            .set_times(&id, 1_000, 1_700_000_000_000 + i as i64 * 1000);
    }
    h.emu.seed_file("root", "elsewhere.mp4", b"x");
    let q = |query: &str| json!({"drive_id": h.drive, "query": query, "return_total_count": true});

    let r = h
        .ok("openFile/search", q(&format!("parent_file_id = '{docs}'")))
        .await;
    assert_eq!(r["total_count"], 4);
    // Default order: newest first.
    assert_eq!(names(&r), ["report 2024.pdf", "c.mp4", "b.txt", "a.mp4"]);

    let r = h
        .ok(
            "openFile/search",
            q(&format!(
                "parent_file_id = '{docs}' and file_extension = 'mp4'"
            )),
        )
        .await;
    assert_eq!(names(&r).len(), 2);
    let r = h.ok("openFile/search", q("name match 'REPORT'")).await;
    assert_eq!(names(&r), ["report 2024.pdf"]);
    let r = h
        .ok(
            "openFile/search",
            q(&format!("updated_at > '2023-11-14T22:13:21' and updated_at < '2023-11-14T22:13:24' and parent_file_id = '{docs}'")),
        )
        .await;
    assert_eq!(
        names(&r),
        ["report 2024.pdf", "c.mp4"],
        "updated_at > T, UTC"
    );
    let r = h
        .ok("openFile/search", q("category = 'video' or name = 'b.txt'"))
        .await;
    assert_eq!(r["total_count"], 4);

    // Paging with an opaque marker, ascending by name.
    let mut seen = Vec::new();
    let mut marker = String::new();
    loop {
        let r = h
            .ok(
                "openFile/search",
                json!({"drive_id": h.drive, "query": "type = 'file'", "order_by": "name ASC",
                       "limit": 2, "marker": marker}),
            )
            .await;
        assert!(r.get("total_count").is_none(), "only when asked for");
        seen.extend(names(&r));
        marker = r["next_marker"].as_str().unwrap().to_string();
        if marker.is_empty() {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            "a.mp4",
            "b.txt",
            "c.mp4",
            "elsewhere.mp4",
            "report 2024.pdf"
        ]
    );

    // Bad queries and limits are refused with a code.
    for bad in ["name = ", "color = 'red'", "a = '1' and b"] {
        assert_err(
            &h.call("openFile/search", q(bad)).await,
            400,
            "InvalidParameter.Query",
        );
    }
    let over = json!({"drive_id": h.drive, "query": "", "limit": 101});
    assert_eq!(h.call("openFile/search", over).await.status, 400);
}

#[tokio::test]
async fn search_leaves_out_the_recycle_bin_and_sees_moved_updated_at() {
    let h = start(|_| {}).await;
    let dir = h.mkdir("root", "d").await;
    let inner = h.emu.seed_file(&dir, "inner.txt", b"1");
    let loose = h.emu.seed_file("root", "loose.txt", b"2");
    // Made a minute ago, so the rename below lands on a later millisecond however fast it runs.
    let minute_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 60_000;
    h.emu.set_times(&loose, minute_ago, minute_ago);
    let q = json!({"drive_id": h.drive, "query": "type = 'file'", "return_total_count": true});
    assert_eq!(h.ok("openFile/search", q.clone()).await["total_count"], 2);
    let before = h
        .ok(
            "openFile/get",
            json!({"drive_id": h.drive, "file_id": loose}),
        )
        .await;
    // Trashing a folder hides what is inside it too.
    h.emu.device("trash", json!({"file_id": dir})).unwrap();
    let r = h.ok("openFile/search", q.clone()).await;
    assert_eq!(names(&r), ["loose.txt"]);
    assert!(!r.to_string().contains(&inner));
    // A rename by another device moves updated_at: an `updated_at >` query finds it.
    let t = before["updated_at"].as_str().unwrap().to_string();
    h.emu
        .device("rename", json!({"file_id": loose, "name": "renamed.txt"}))
        .unwrap();
    let r = h
        .ok(
            "openFile/search",
            json!({"drive_id": h.drive, "query": format!("updated_at > '{t}'")}),
        )
        .await;
    assert_eq!(names(&r), ["renamed.txt"]);
}

#[tokio::test]
async fn delta_feed_is_off_by_default_and_reports_every_kind_of_change() {
    let h = start(|_| {}).await;
    let body = json!({"drive_id": h.drive});
    assert_eq!(
        h.call("openFile/get_last_cursor", body.clone())
            .await
            .status,
        404
    );
    assert_eq!(
        h.call("openFile/list_delta", body.clone()).await.status,
        404
    );
    admin(&h, "delta_feed", json!({"on": true})).await;
    let start_cursor = h.ok("openFile/get_last_cursor", body.clone()).await["cursor"]
        .as_str()
        .unwrap()
        .to_string();

    // Seven kinds of change, as another device makes them.
    let d = admin(
        &h,
        "device/mkdir",
        json!({"parent_file_id": "root", "name": "phone"}),
    )
    .await;
    let d = d["file_id"].as_str().unwrap().to_string();
    let f = admin(
        &h,
        "device/create",
        json!({"parent_file_id": d, "name": "a.txt", "content": "one"}),
    )
    .await;
    let f = f["file_id"].as_str().unwrap().to_string();
    admin(
        &h,
        "device/overwrite",
        json!({"file_id": f, "content": "two!"}),
    )
    .await;
    admin(&h, "device/rename", json!({"file_id": f, "name": "b.txt"})).await;
    admin(
        &h,
        "device/move",
        json!({"file_id": f, "to_parent_file_id": "root"}),
    )
    .await;
    admin(&h, "device/trash", json!({"file_id": f})).await;
    admin(&h, "device/delete", json!({"file_id": d})).await;

    let mut ops = Vec::new();
    let mut cursor = start_cursor;
    loop {
        let r = h
            .ok(
                "openFile/list_delta",
                json!({"drive_id": h.drive, "cursor": cursor, "limit": 3}),
            )
            .await;
        for i in r["items"].as_array().unwrap() {
            ops.push(format!(
                "{} {}",
                i["op"].as_str().unwrap(),
                i["file"]["name"].as_str().unwrap_or("-")
            ));
        }
        cursor = r["cursor"].as_str().unwrap().to_string();
        if !r["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(
        ops,
        [
            "create -",
            "create b.txt",
            "update b.txt",
            "update b.txt",
            "move b.txt",
            "trash b.txt",
            "delete -"
        ],
        "each change once, oldest first, with the item as it is now"
    );
    // The emulator holds what the device did; the client made no call for it.
    let tree = h.emu.tree();
    let moved = tree.iter().find(|e| e.file_id == f).unwrap();
    assert!(moved.trashed && moved.size == 4 && moved.name == "b.txt");
    assert!(!tree.iter().any(|e| e.file_id == d));
    assert_eq!(h.emu.call_count("openFile/create"), 0);
    // Nothing new: an empty page at the same cursor. A cursor from the future is refused.
    let r = h
        .ok(
            "openFile/list_delta",
            json!({"drive_id": h.drive, "cursor": cursor}),
        )
        .await;
    assert_eq!(r["items"].as_array().unwrap().len(), 0);
    let bad = json!({"drive_id": h.drive, "cursor": "999999"});
    assert_err(
        &h.call("openFile/list_delta", bad).await,
        400,
        "InvalidParameter.Cursor",
    );
}

#[tokio::test]
async fn device_ops_refuse_what_does_not_exist() {
    let h = start(|_| {}).await;
    assert!(h
        .emu
        .device("create", json!({"parent_file_id": "nope", "name": "x"}))
        .is_err());
    assert!(h
        .emu
        .device("rename", json!({"file_id": "nope", "name": "x"}))
        .is_err());
    assert!(h.emu.device("explode", json!({})).is_err());
    let a = h.emu.seed_file("root", "a", b"");
    h.emu.seed_file("root", "b", b"");
    let clash = h.emu.device("rename", json!({"file_id": a, "name": "b"}));
    assert!(clash.unwrap_err().contains("AlreadyExist"));
}
