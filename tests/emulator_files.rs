//! The emulator's file operations over plain HTTP: the file object, errors by id and path,
//! name conflicts, move/copy, trash/delete/async tasks, quota (video preview: emulator_transcode.rs).

#[path = "emulator_support.rs"]
mod support;

use serde_json::{json, Value};
use support::*;

#[tokio::test]
async fn file_objects_have_the_real_shape_and_errors_their_codes() {
    let h = start(|_| {}).await;
    let dir = h.emu.seed_folder("root", "Docs");
    let f = h.emu.seed_file(&dir, "Hello.TXT", b"Hello World!");
    let o = h
        .ok("openFile/get", json!({"drive_id": h.drive, "file_id": f}))
        .await;
    assert_eq!(
        o["content_hash"],
        "2EF7BDE608CE5404E97D5F042F95F89F1C232871"
    );
    assert_eq!(o["size"], 12);
    assert_eq!(o["file_extension"], "txt");
    assert_eq!(o["category"], "doc");
    assert_eq!(o["type"], "file");
    assert_eq!(o["parent_file_id"], json!(dir));
    assert!(o["trashed"].is_null());
    let ts = o["created_at"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
    let d = h
        .ok("openFile/get", json!({"drive_id": h.drive, "file_id": dir}))
        .await;
    assert_eq!(d["type"], "folder");
    for absent in ["size", "content_hash", "file_extension"] {
        assert!(d.get(absent).is_none(), "folder has {absent}");
    }
    let by_path = h
        .ok(
            "openFile/get_by_path",
            json!({"drive_id": h.drive, "file_path": "/Docs/Hello.TXT"}),
        )
        .await;
    assert_eq!(by_path["file_id"], json!(f));
    assert_envelope(
        &h.call(
            "openFile/get_by_path",
            json!({"drive_id": h.drive, "file_path": "/Docs/nope"}),
        )
        .await,
        400,
        "NotFound.File",
    );
    assert_envelope(
        &h.call(
            "openFile/get",
            json!({"drive_id": h.drive, "file_id": "0".repeat(40)}),
        )
        .await,
        404,
        "NotFound.FileId",
    );
    assert_envelope(
        &h.call("openFile/get", json!({"drive_id": "123", "file_id": f}))
            .await,
        403,
        "ForbiddenDriveNotValid",
    );
    assert_envelope(
        &h.call("openFile/get", json!({"file_id": f})).await,
        400,
        "InvalidParameter.DriveId",
    );
    let b = h.ok("openFile/batch/get", json!({"file_list": [{"drive_id": h.drive, "file_id": f}, {"drive_id": h.drive, "file_id": "missing"}]})).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    // Resource drive is separate.
    let res = h.emu.drive_id("resource").unwrap();
    assert_envelope(
        &h.call("openFile/get", json!({"drive_id": res, "file_id": f}))
            .await,
        404,
        "NotFound.FileId",
    );
    assert_eq!(
        h.ok(
            "openFile/list",
            json!({"drive_id": res, "parent_file_id": "root"})
        )
        .await["items"],
        json!([])
    );
}

#[tokio::test]
async fn name_conflict_modes() {
    let h = start(|_| {}).await;
    let first = h.mkdir("root", "dup").await;
    let create = |mode: &str| json!({"drive_id": h.drive, "parent_file_id": "root", "name": "dup", "type": "folder", "check_name_mode": mode});
    let r = h.ok("openFile/create", create("refuse")).await;
    assert_eq!(r["exist"], true);
    assert_eq!(r["file_id"], json!(first));
    assert!(r["upload_id"].is_null());
    let r = h.ok("openFile/create", create("auto_rename")).await;
    assert_eq!(r["file_name"], "dup(1)");
    let r = h.ok("openFile/create", create("ignore")).await;
    assert_ne!(r["file_id"], json!(first));
    let dups = h.list_all("root", json!({})).await;
    assert_eq!(dups.iter().filter(|i| i["name"] == "dup").count(), 2);
    // Files: refuse gives exist:true and no session.
    h.emu.seed_file("root", "x.txt", b"1");
    let r = h.ok("openFile/create", json!({"drive_id": h.drive, "parent_file_id": "root", "name": "x.txt", "type": "file", "check_name_mode": "refuse", "size": 1})).await;
    assert_eq!(r["exist"], true);
    assert!(r["upload_id"].is_null() && r.get("part_info_list").is_none());
    let r = h.ok("openFile/create", json!({"drive_id": h.drive, "parent_file_id": "root", "name": "x.txt", "type": "file", "check_name_mode": "auto_rename", "size": 1})).await;
    assert_eq!(r["file_name"], "x(1).txt");
    // Rename clash.
    let y = h.emu.seed_file("root", "y.txt", b"2");
    let r = h.call("openFile/update", json!({"drive_id": h.drive, "file_id": y, "name": "x.txt", "check_name_mode": "refuse"})).await;
    assert_envelope(&r, 409, "AlreadyExist.File");
    let r = h
        .ok(
            "openFile/update",
            json!({"drive_id": h.drive, "file_id": y, "name": "z.txt"}),
        )
        .await;
    assert_eq!(r["name"], "z.txt");
    assert_err(
        &h.call(
            "openFile/update",
            json!({"drive_id": h.drive, "file_id": y, "name": "a/b"}),
        )
        .await,
        400,
        "InvalidParameter.Name",
    );
}

#[tokio::test]
async fn move_and_copy() {
    let h = start(|_| {}).await;
    let a = h.mkdir("root", "a").await;
    let b = h.mkdir("root", "b").await;
    let inner = h.mkdir(&a, "inner").await;
    let f = h.emu.seed_file(&a, "f.txt", b"data");
    h.emu.seed_file(&b, "f.txt", b"other");
    let mv = |id: &str, to: &str, mode: &str| json!({"drive_id": h.drive, "file_id": id, "to_parent_file_id": to, "check_name_mode": mode});
    let r = h.ok("openFile/move", mv(&f, &b, "refuse")).await;
    assert_eq!(r["exist"], true);
    assert_eq!(
        h.ok("openFile/get", json!({"drive_id": h.drive, "file_id": f}))
            .await["parent_file_id"],
        json!(a)
    );
    let r = h.ok("openFile/move", mv(&f, &b, "auto_rename")).await;
    assert_eq!(r["exist"], false);
    let o = h
        .ok("openFile/get", json!({"drive_id": h.drive, "file_id": f}))
        .await;
    assert_eq!(
        (o["parent_file_id"].clone(), o["name"].clone()),
        (json!(b), json!("f(1).txt"))
    );
    assert_err(
        &h.call("openFile/move", mv(&a, &inner, "refuse")).await,
        400,
        "InvalidParameter.ToParentFileId",
    );
    let r = h.ok("openFile/move", mv(&a, &b, "refuse")).await;
    assert!(!r["async_task_id"].as_str().unwrap().is_empty());
    // Copy: same folder without auto_rename fails; with it, a renamed copy; folders get a task.
    let cp = |id: &str, to: &str, auto: bool| json!({"drive_id": h.drive, "file_id": id, "to_parent_file_id": to, "auto_rename": auto});
    assert_envelope(
        &h.call("openFile/copy", cp(&f, &b, false)).await,
        409,
        "AlreadyExist.File",
    );
    let r = h.ok("openFile/copy", cp(&f, &b, true)).await;
    assert!(r.get("async_task_id").is_none());
    let copy = h
        .ok(
            "openFile/get",
            json!({"drive_id": h.drive, "file_id": r["file_id"]}),
        )
        .await;
    assert_eq!(copy["name"], "f(1)(1).txt");
    assert_eq!(copy["content_hash"], json!(h.emu.file_sha1(&f).unwrap()));
    let r = h.ok("openFile/copy", cp(&a, "root", false)).await;
    assert!(!r["async_task_id"].as_str().unwrap().is_empty());
    let names: Vec<String> = h.emu.tree().iter().map(|e| e.path.clone()).collect();
    assert!(names.contains(&"/a/inner".to_string()), "{names:?}");
    assert!(names.contains(&"/b/a/inner".to_string()), "{names:?}");
}

#[tokio::test]
async fn trash_delete_and_async_tasks() {
    let h = start(|_| {}).await;
    let d = h.mkdir("root", "d").await;
    let f = h.emu.seed_file(&d, "f.bin", &[7u8; 1000]);
    let r = h
        .ok(
            "openFile/recyclebin/trash",
            json!({"drive_id": h.drive, "file_id": d}),
        )
        .await;
    let task = r["async_task_id"].as_str().unwrap().to_string();
    let t1 = h
        .ok("openFile/async_task/get", json!({"async_task_id": task}))
        .await;
    assert_eq!(t1["state"], "Running");
    let t2 = h
        .ok("openFile/async_task/get", json!({"async_task_id": task}))
        .await;
    assert_eq!(t2["state"], "Succeed");
    assert_eq!(h.list_all("root", json!({})).await, Vec::<Value>::new());
    assert_envelope(
        &h.call("openFile/get", json!({"drive_id": h.drive, "file_id": f}))
            .await,
        400,
        "ForbiddenFileInTheRecycleBin",
    );
    assert_envelope(
        &h.call(
            "openFile/recyclebin/trash",
            json!({"drive_id": h.drive, "file_id": d}),
        )
        .await,
        400,
        "ForbiddenFileInTheRecycleBin",
    );
    assert_err(
        &h.call(
            "openFile/get_by_path",
            json!({"drive_id": h.drive, "file_path": "/d"}),
        )
        .await,
        400,
        "NotFound.File",
    );
    // Trashed bytes still count.
    let s = h.ok("user/getSpaceInfo", json!({})).await;
    assert_eq!(s["personal_space_info"]["used_size"], 1000);
    assert!(h.emu.tree().iter().any(|e| e.file_id == d && e.trashed));
    // Delete empties it, including from the bin; files get no task id.
    let r = h
        .ok(
            "openFile/delete",
            json!({"drive_id": h.drive, "file_id": d}),
        )
        .await;
    assert!(r["async_task_id"].is_string());
    assert!(h.emu.tree().is_empty());
    assert_eq!(
        h.ok("user/getSpaceInfo", json!({})).await["personal_space_info"]["used_size"],
        0
    );
    let g = h.emu.seed_file("root", "g", b"x");
    let r = h
        .ok(
            "openFile/delete",
            json!({"drive_id": h.drive, "file_id": g}),
        )
        .await;
    assert!(r.get("async_task_id").is_none());
    assert_envelope(
        &h.call(
            "openFile/delete",
            json!({"drive_id": h.drive, "file_id": g}),
        )
        .await,
        404,
        "NotFound.FileId",
    );
    assert_err(
        &h.call("openFile/async_task/get", json!({"async_task_id": "nope"}))
            .await,
        404,
        "NotFound.AsyncTask",
    );
}

#[tokio::test]
async fn quota_is_enforced_on_create() {
    let h = start(|c| c.quota_bytes = 1000).await;
    h.emu.seed_file("root", "a", &[1u8; 600]);
    let create = |size: u64| json!({"drive_id": h.drive, "parent_file_id": "root", "name": "b", "type": "file", "size": size});
    assert_envelope(
        &h.call("openFile/create", create(500)).await,
        400,
        "QuotaExhausted.Drive",
    );
    assert_eq!(h.call("openFile/create", create(400)).await.status, 200);
    h.emu.set_quota(10_000);
    assert_eq!(h.call("openFile/create", create(5000)).await.status, 200);
}
