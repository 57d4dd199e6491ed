//! mount(8) helper mode: `mount -t fuse.alipanfs CONFIG DIR -o OPTS` (and fstab lines) run
//! `/sbin/mount.fuse.alipanfs CONFIG DIR [-sfnv] [-N ns] [-o OPTS] [-t type]`. When the binary is
//! invoked under that name (a symlink to it), its argv is rewritten into the equivalent
//! `alipanfs mount DIR --config CONFIG -o OPTS`, which then runs in daemon mode: it returns once
//! the mount answers, or fails with the reason, as mount(8) expects of a helper.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// Names under which the binary acts as a mount helper.
const HELPER_NAMES: [&str; 2] = ["mount.fuse.alipanfs", "mount.alipanfs"];

/// What to do with the process arguments.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Not called as a helper: parse argv as the normal CLI.
    Cli(Vec<OsString>),
    /// Called as a helper: parse these rewritten arguments instead.
    Helper(Vec<OsString>),
    /// `-f` (fake): mount(8) wants everything done except the mount itself; succeed quietly.
    Fake,
}

/// Whether argv[0] names the mount helper.
pub fn is_helper_name(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| HELPER_NAMES.contains(&name))
}

/// Whether argv is fuse3's `mount.fuse` calling us by type: `alipanfs SOURCE DIR -o OPTS`
/// (what mount(8) falls back to for `fuse.alipanfs` when mount.fuse.alipanfs is not installed).
/// SOURCE is an absolute config path or `alipanfs`/`none`, never a subcommand name.
fn is_mount_fuse_form(argv: &[OsString]) -> bool {
    argv.len() >= 3
        && argv[1]
            .to_str()
            .is_some_and(|a| a.starts_with('/') || a == "alipanfs" || a == "none")
}

/// Rewrite a helper command line into a CLI one; other command lines pass through unchanged.
pub fn invocation(argv: Vec<OsString>) -> Result<Invocation, String> {
    match argv.first() {
        Some(argv0) if is_helper_name(argv0) || is_mount_fuse_form(&argv) => {}
        _ => return Ok(Invocation::Cli(argv)),
    }
    let mut positional: Vec<OsString> = Vec::new();
    let mut options: Vec<OsString> = Vec::new();
    let mut fake = false;
    let mut verbose = false;
    let mut rest = argv.into_iter().skip(1);
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else {
            positional.push(arg);
            continue;
        };
        match text {
            "-o" => options.push(rest.next().ok_or("option -o needs a value")?),
            // mount(8) passes the full type (fuse.alipanfs); we know it already.
            "-t" => {
                rest.next().ok_or("option -t needs a value")?;
            }
            "-N" => {
                return Err(
                    "mount namespaces (-N) are not supported by mount.fuse.alipanfs".to_string(),
                )
            }
            _ if text.starts_with("-o") && text.len() > 2 => options.push(text[2..].into()),
            _ if text.starts_with('-') && text.len() > 1 && !text.starts_with("--") => {
                for flag in text[1..].chars() {
                    match flag {
                        'f' => fake = true,
                        'v' => verbose = true,
                        // -n: do not write mtab (the kernel's mountinfo is the table now);
                        // -s: sloppy; our option parser names what it refuses instead.
                        'n' | 's' | 'r' | 'w' => {}
                        other => return Err(format!("unknown mount helper flag -{other}")),
                    }
                }
            }
            _ => positional.push(arg),
        }
    }
    let [config, mountpoint]: [OsString; 2] = positional.try_into().map_err(|p: Vec<_>| {
        format!(
            "usage: mount.fuse.alipanfs CONFIG MOUNTPOINT [-o OPTIONS] (got {} operands)",
            p.len()
        )
    })?;
    if fake {
        return Ok(Invocation::Fake);
    }
    let mut out: Vec<OsString> = vec!["alipanfs".into()];
    if verbose {
        out.extend(["--log-level".into(), "debug".into()]);
    }
    out.push("mount".into());
    out.push(mountpoint);
    // `alipanfs` / `none` in the fstab source field mean "the default config file".
    if !matches!(config.to_str(), Some("alipanfs" | "none" | "")) {
        out.push("--config".into());
        out.push(config);
    }
    for o in options {
        out.push("-o".into());
        out.push(o);
    }
    Ok(Invocation::Helper(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_normal_cli_passes_through() {
        let a = argv(&["/usr/bin/alipanfs", "mount", "/mnt/x"]);
        assert_eq!(invocation(a.clone()), Ok(Invocation::Cli(a)));
    }

    #[test]
    fn a_helper_command_line_becomes_a_daemon_mount() {
        let got = invocation(argv(&[
            "/sbin/mount.fuse.alipanfs",
            "/etc/alipanfs/media.toml",
            "/mnt/alipan",
            "-n",
            "-o",
            "rw,_netdev,uid=1000",
            "-t",
            "fuse.alipanfs",
        ]));
        assert_eq!(
            got,
            Ok(Invocation::Helper(argv(&[
                "alipanfs",
                "mount",
                "/mnt/alipan",
                "--config",
                "/etc/alipanfs/media.toml",
                "-o",
                "rw,_netdev,uid=1000",
            ])))
        );
    }

    #[test]
    fn default_config_fake_verbose_and_bad_usage() {
        assert_eq!(
            invocation(argv(&["mount.alipanfs", "none", "/m", "-sv", "-oro"])),
            Ok(Invocation::Helper(argv(&[
                "alipanfs",
                "--log-level",
                "debug",
                "mount",
                "/m",
                "-o",
                "ro"
            ])))
        );
        assert_eq!(
            invocation(argv(&["mount.fuse.alipanfs", "alipanfs", "/m", "-f"])),
            Ok(Invocation::Fake)
        );
        // fuse3's mount.fuse runs the type's name with the same operands.
        assert_eq!(
            invocation(argv(&["alipanfs", "/etc/a.toml", "/m", "-o", "ro"])),
            Ok(Invocation::Helper(argv(&[
                "alipanfs",
                "mount",
                "/m",
                "--config",
                "/etc/a.toml",
                "-o",
                "ro"
            ])))
        );
        let err = invocation(argv(&["mount.fuse.alipanfs", "/m"])).unwrap_err();
        assert!(err.contains("usage"), "{err}");
        let err = invocation(argv(&["mount.fuse.alipanfs", "c", "/m", "-N", "x"])).unwrap_err();
        assert!(err.contains("-N"), "{err}");
    }
}
