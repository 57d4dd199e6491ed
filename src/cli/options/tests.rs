//! The options' contract: every option in every form, switches, precedence.

use super::*;
use crate::drive::DriveChoice;
use crate::fs::LivpMode;

#[test]
fn sizes_and_octal() {
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("256MiB"), Ok(256 << 20));
    assert_eq!(parse_size("1g"), Ok(1 << 30));
    assert!(parse_size("12Q").is_err());
    assert_eq!(parse_octal("022"), Ok(0o22));
    assert!(parse_octal("9").is_err());
}

#[test]
fn o_list_maps_fstab_options_and_refuses_unknown_ones_by_name() {
    let o = MountOptions::from_o_list(&[
        "ro,allow_other,uid=1000,_netdev,x-systemd.automount,drive=resource".into(),
    ])
    .unwrap();
    assert_eq!((o.read_only, o.allow_other), (Some(true), Some(true)));
    assert_eq!(o.uid, Some(1000));
    assert_eq!(o.drive, Some(DriveChoice::Resource));
    let err = MountOptions::from_o_list(&["ro,frobnicate".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("frobnicate"), "{err}");
    assert!(MountOptions::from_o_list(&["refresh_token=x".into()]).is_err());
}

#[test]
fn config_file_uses_the_long_option_names() {
    let o: MountOptions = toml::from_str(
        "drive = \"backup\"\nmax-read-ahead = \"32M\"\nread-only = true\numask = \"077\"\ndir-cache-ttl = 5\n",
    )
    .unwrap();
    assert_eq!(o.drive, Some(DriveChoice::Backup));
    assert_eq!(o.max_read_ahead, Some(32 << 20));
    assert_eq!(o.umask, Some(0o77));
    assert_eq!(o.read_only, Some(true));
    assert!(toml::from_str::<MountOptions>("no-such-option = 1").is_err());
    // The command line wins over the file.
    let cli = MountOptions {
        drive: Some(DriveChoice::Resource),
        ..Default::default()
    };
    assert_eq!(cli.or(o).drive, Some(DriveChoice::Resource));
}

#[test]
fn upload_while_writing_takes_a_size_or_off() {
    let resolved = |o: MountOptions| o.resolve().unwrap().upload_while_writing;
    assert_eq!(resolved(MountOptions::default()), Some(128 << 20));
    let o = MountOptions::from_o_list(&["upload_while_writing=off".into()]).unwrap();
    assert_eq!(resolved(o), None);
    let o = MountOptions::from_o_list(&["upload_while_writing=64M".into()]).unwrap();
    assert_eq!(resolved(o), Some(64 << 20));
    for (toml_text, want) in [
        ("upload-while-writing = \"off\"", None),
        ("upload-while-writing = false", None),
        ("upload-while-writing = \"1G\"", Some(1 << 30)),
        ("upload-while-writing = 1048576", Some(1 << 20)),
    ] {
        let o: MountOptions = toml::from_str(toml_text).unwrap();
        assert_eq!(resolved(o), want, "{toml_text}");
    }
    assert!(parse_size_or_off("sometimes").is_err());
}

#[test]
fn rapid_upload_is_on_unless_turned_off() {
    let resolved = |o: MountOptions| o.resolve().unwrap().rapid_upload;
    assert!(resolved(MountOptions::default()));
    assert!(!resolved(from_cli(&["--rapid-upload=off".into()])));
    assert!(!resolved(from_cli(&["--rapid-upload=false".into()])));
    assert!(resolved(from_cli(&["--rapid-upload=on".into()])));
    let o = MountOptions::from_o_list(&["rapid_upload=off".into()]).unwrap();
    assert!(!resolved(o));
    for (text, want) in [
        ("rapid-upload = \"off\"", false),
        ("rapid-upload = false", false),
        ("rapid-upload = \"on\"", true),
    ] {
        let o: MountOptions = toml::from_str(text).unwrap();
        assert_eq!(resolved(o), want, "{text}");
    }
    assert!(toml::from_str::<MountOptions>("rapid-upload = \"maybe\"").is_err());
}

#[test]
fn internal_upload_sends_parts_to_the_configured_origin() {
    let origin = |o: MountOptions| o.resolve().unwrap().upload_origin;
    assert_eq!(origin(MountOptions::default()), None);
    let on = MountOptions {
        internal_upload: Some(true),
        ..Default::default()
    };
    assert_eq!(
        origin(on.clone()).as_deref(),
        Some(DEFAULT_INTERNAL_UPLOAD_URL)
    );
    let elsewhere = MountOptions {
        internal_upload_url: Some("http://10.0.0.1:8080/".into()),
        ..on
    };
    assert_eq!(
        origin(elsewhere.clone()).as_deref(),
        Some("http://10.0.0.1:8080")
    );
    // The URL alone does not turn it on.
    let off = MountOptions {
        internal_upload: Some(false),
        ..elsewhere
    };
    assert_eq!(origin(off), None);
}

#[test]
fn the_example_config_file_is_valid() {
    let o: MountOptions =
        toml::from_str(include_str!("../../../contrib/config.example.toml")).unwrap();
    assert_eq!(o.drive, Some(DriveChoice::Resource));
    o.resolve().unwrap();
}

#[test]
fn transcodes_tree_is_on_under_its_default_name_unless_turned_off() {
    let dir = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        from_cli(&args).resolve().map(|r| r.transcodes_dir)
    };
    assert_eq!(dir(&[]).unwrap().as_deref(), Some(".transcoded"));
    assert_eq!(
        dir(&["--transcodes-dir", ".hls"]).unwrap().as_deref(),
        Some(".hls")
    );
    assert_eq!(
        dir(&["--transcodes=off", "--transcodes-dir", ".hls"]).unwrap(),
        None
    );
    assert!(dir(&["--transcodes-dir", "a/b"]).is_err());
    let o = MountOptions::from_o_list(&["transcodes=off,livp=mov".into()]).unwrap();
    let r = o.resolve().unwrap();
    assert_eq!((r.transcodes_dir, r.livp), (None, LivpMode::Mov));
}

#[test]
fn client_id_without_secret_is_refused() {
    let o = MountOptions {
        client_id: Some("id".into()),
        ..Default::default()
    };
    assert!(o.resolve().is_err());
    let s = MountOptions::default().resolve().unwrap();
    assert_eq!(s.root_folder_id, "root");
    assert_eq!(s.api_url, DEFAULT_API_URL);
}

/// A valid value for every long option, as TOML (the `-o` and command-line forms drop the
/// quotes). The test below fails for an option missing here, so none can be forgotten.
fn sample(long: &str) -> &'static str {
    match long {
        "refresh-token" => "\"eyJ.sample.token\"",
        "token-file" => "\"/tmp/token.json\"",
        "client-id" => "\"app-id\"",
        "client-secret" => "\"app-secret\"",
        "root-folder-id" => "\"0123abcd\"",
        "drive" => "\"resource\"",
        "drive-names" => "\"resource=R:backup=B\"",
        "api-url" => "\"http://127.0.0.1:9\"",
        "token-url" => "\"http://127.0.0.1:9/token\"",
        "read-only" | "allow-other" | "delete-permanently" | "strict-permissions" => "true",
        "uid" => "1234",
        "gid" => "4321",
        "umask" => "\"077\"",
        "attr-timeout" => "2.5",
        "dir-cache-ttl" => "30",
        "max-read-ahead" => "\"32M\"",
        "memory-limit" => "\"512M\"",
        "max-downloads" => "2",
        "cache-dir" => "\"/tmp/alipanfs-cache\"",
        "cache-size" => "\"2G\"",
        "passthrough" => "\"off\"",
        "part-size" => "\"8M\"",
        "upload-while-writing" => "\"off\"",
        // "on" because the bare switch (`--rapid-upload`, `-o rapid_upload`) means on.
        "rapid-upload" => "\"on\"",
        "internal-upload" => "true",
        "internal-upload-url" => "\"http://127.0.0.1:9/internal\"",
        "order-by" => "\"updated_at\"",
        "order-direction" => "\"desc\"",
        "transcodes" => "\"on\"",
        "transcodes-dir" => "\".videos\"",
        "livp" => "\"jpeg\"",
        "list-rate" => "2.5",
        "download-url-rate" => "0.5",
        "api-rate" => "7",
        "upload-drain-timeout" => "12",
        "startup-timeout" => "9",
        "metrics-listen" => "\"127.0.0.1:9464\"",
        "bwlimit-download" => "\"20M\"",
        "bwlimit-upload" => "\"512K\"",
        "poll-interval" => "30",
        "on-change" => "\"/usr/local/bin/tell-jellyfin\"",
        "webdav-listen" => "\"127.0.0.1:8080\"",
        "webdav-user" => "\"alice\"",
        "webdav-password-file" => "\"/etc/alipanfs/webdav-password\"",
        "webdav-tls-cert" => "\"/etc/alipanfs/cert.pem\"",
        "webdav-tls-key" => "\"/etc/alipanfs/key.pem\"",
        other => panic!("add a sample value for the new option --{other}"),
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    o: MountOptions,
}

fn from_cli(args: &[String]) -> MountOptions {
    use clap::Parser as _;
    let argv = std::iter::once("alipanfs".to_string()).chain(args.iter().cloned());
    Cli::try_parse_from(argv).unwrap().o
}

#[test]
fn every_long_option_works_on_the_command_line_in_o_and_in_the_config_file() {
    let longs = long_options();
    assert!(longs.len() >= 28, "{longs:?}");
    let default = format!("{:?}", MountOptions::default());
    for (long, is_bool) in longs {
        let toml_value = sample(&long);
        let plain = toml_value.trim_matches('"');
        let file: MountOptions = toml::from_str(&format!("{long} = {toml_value}"))
            .unwrap_or_else(|e| panic!("config file {long}: {e}"));
        let set = format!("{file:?}");
        assert_ne!(set, default, "{long} in the config file set nothing");
        let cli = from_cli(&[format!("--{long}={plain}")]);
        assert_eq!(format!("{cli:?}"), set, "--{long}");
        if is_bool {
            assert_eq!(format!("{:?}", from_cli(&[format!("--{long}")])), set);
        }
        for key in [long.clone(), long.replace('-', "_")] {
            let o = MountOptions::from_o_list(&[format!("{key}={plain}")]);
            if long == "refresh-token" || long == "client-secret" {
                // Everyone can read /proc/mounts and ps: secrets never go in -o.
                let err = o.unwrap_err().to_string();
                assert!(err.contains("refused"), "{err}");
                continue;
            }
            let o = o.unwrap_or_else(|e| panic!("-o {key}={plain}: {e}"));
            assert_eq!(format!("{o:?}"), set, "-o {key}={plain}");
            if is_bool {
                let bare = MountOptions::from_o_list(std::slice::from_ref(&key)).unwrap();
                assert_eq!(format!("{bare:?}"), set, "-o {key}");
            }
        }
    }
}

#[test]
fn booleans_can_be_set_both_ways_and_precedence_holds() {
    let file: MountOptions = toml::from_str(
        "read-only = true\ndelete-permanently = true\nstrict-permissions = true\nallow-other = true\n",
    )
    .unwrap();
    // -o rw beats the config file's read-only = true.
    let o = MountOptions::from_o_list(&["rw".into()]).unwrap();
    let s = o.or(file.clone()).resolve().unwrap();
    assert!(!s.read_only);
    assert!(s.delete_permanently && s.strict_permissions && s.allow_other);
    let o = MountOptions::from_o_list(&[
        "delete_permanently=false,strict-permissions=no,allow_other=0".into(),
    ])
    .unwrap();
    let s = o.or(file.clone()).resolve().unwrap();
    assert!(s.read_only && !s.delete_permanently && !s.strict_permissions && !s.allow_other);
    // The command line beats -o and the file, both ways.
    let cli = from_cli(&[
        "--read-only=false".into(),
        "--delete-permanently=false".into(),
    ]);
    let o = MountOptions::from_o_list(&["ro".into()]).unwrap();
    let s = cli.or(o).or(file.clone()).resolve().unwrap();
    assert!(!s.read_only && !s.delete_permanently);
    let cli = from_cli(&["--read-only".into()]);
    let o = MountOptions::from_o_list(&["rw".into()]).unwrap();
    assert!(cli.or(o).resolve().unwrap().read_only);
    // The last of repeated -o words wins, as mount(8) does.
    let o = MountOptions::from_o_list(&["ro,rw".into()]).unwrap();
    assert_eq!(o.read_only, Some(false));
    let o = MountOptions::from_o_list(&["rw".into(), "ro".into()]).unwrap();
    assert_eq!(o.read_only, Some(true));
    // Nothing said: off.
    assert!(!MountOptions::default().resolve().unwrap().read_only);
    // --no-NAME is NAME=false, for every switch.
    let argv = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
    assert_eq!(
        expand_negations(argv(&[
            "alipanfs",
            "mount",
            "--no-delete-permanently",
            "--no-such"
        ])),
        argv(&[
            "alipanfs",
            "mount",
            "--delete-permanently=false",
            "--no-such"
        ])
    );
    for (long, switch) in long_options() {
        if switch {
            let out = expand_negations(argv(&[&format!("--no-{long}")]));
            assert_eq!(out, argv(&[&format!("--{long}=false")]));
        }
    }
    // Bad values are refused by option name.
    let err = MountOptions::from_o_list(&["uid=me".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("uid"), "{err}");
    let err = MountOptions::from_o_list(&["read_only=maybe".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("read"), "{err}");
    let err = MountOptions::from_o_list(&["max_downloads".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs a value"), "{err}");
}

#[test]
fn every_switch_takes_every_spelling_in_every_form_and_refuses_two_words() {
    let argv = |v: &[String]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
    let switches: Vec<String> = long_options()
        .into_iter()
        .filter_map(|(long, switch)| switch.then_some(long))
        .collect();
    assert!(switches.len() >= 7, "{switches:?}");
    for long in &switches {
        let field = |o: &MountOptions| {
            let text = format!("{o:?}");
            let key = format!("{}: ", long.replace('-', "_"));
            let at = text.find(&key).unwrap() + key.len();
            text[at..].split([',', ' ']).next().unwrap().to_string()
        };
        for (word, want) in [
            ("on", "Some(true)"),
            ("true", "Some(true)"),
            ("yes", "Some(true)"),
            ("off", "Some(false)"),
            ("false", "Some(false)"),
            ("no", "Some(false)"),
        ] {
            let cli = from_cli(&[format!("--{long}={word}")]);
            assert_eq!(field(&cli), want, "--{long}={word}");
            let o =
                MountOptions::from_o_list(&[format!("{}={word}", long.replace('-', "_"))]).unwrap();
            assert_eq!(field(&o), want, "-o {long}={word}");
            let file: MountOptions = toml::from_str(&format!("{long} = \"{word}\"")).unwrap();
            assert_eq!(field(&file), want, "{long} = \"{word}\"");
        }
        assert_eq!(field(&from_cli(&[format!("--{long}")])), "Some(true)");
        let negated = prepare_argv(argv(&["alipanfs".into(), format!("--no-{long}")])).unwrap();
        assert_eq!(
            negated,
            argv(&["alipanfs".into(), format!("--{long}=false")])
        );
        let err = prepare_argv(argv(&[
            "alipanfs".into(),
            "mount".into(),
            format!("--{long}"),
            "off".into(),
            "/mnt".into(),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains(&format!("--{long}=off")), "{err}");
        // A switch followed by a mount point is still the bare switch.
        let fine = argv(&["alipanfs".into(), format!("--{long}"), "/mnt/drive".into()]);
        assert_eq!(prepare_argv(fine.clone()).unwrap(), fine);
    }
    assert!(parse_switch("maybe").is_err());
}

#[test]
fn drive_names_rename_the_drive_folders_and_refuse_bad_ones() {
    let names = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        from_cli(&args).resolve().map(|r| r.drive_names)
    };
    let pairs = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&[]).unwrap(),
        pairs(&[
            ("resource", "resource"),
            ("backup", "backup"),
            ("default", "default")
        ])
    );
    assert_eq!(
        names(&["--drive-names", "resource=资源库,backup=备份盘"]).unwrap()[..2],
        pairs(&[("resource", "资源库"), ("backup", "备份盘")])
    );
    let o = MountOptions::from_o_list(&["drive=all,drive_names=backup=B:resource=R".into()])
        .unwrap()
        .resolve()
        .unwrap();
    assert_eq!(o.drive, DriveChoice::All);
    assert_eq!(
        o.drive_names[..2],
        pairs(&[("resource", "R"), ("backup", "B")])
    );
    for bad in [
        "photos=x",
        "resource",
        "resource=a/b",
        "resource=x,backup=x",
    ] {
        assert!(names(&["--drive-names", bad]).is_err(), "{bad}");
    }
    assert!(names(&["--drive", "all", "--root-folder-id", "abc"]).is_err());
}

#[test]
fn poll_interval_is_off_or_at_least_a_second() {
    let with = |s: f64| {
        MountOptions {
            poll_interval: Some(s),
            ..MountOptions::default()
        }
        .resolve()
    };
    assert_eq!(
        MountOptions::default().resolve().unwrap().poll_interval,
        Duration::from_secs(60)
    );
    assert!(with(0.0).unwrap().poll_interval.is_zero());
    assert_eq!(with(2.0).unwrap().poll_interval, Duration::from_secs(2));
    let err = with(0.5).unwrap_err().to_string();
    assert!(err.contains("--poll-interval"), "{err}");
}
