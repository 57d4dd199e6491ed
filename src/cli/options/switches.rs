//! Switches (boolean options) on the command line: `--x`, `--x=on|off|true|false|yes|no` and
//! `--no-x` are accepted; `--x off` as two words is refused naming the form to use (clap alone
//! would say only "unexpected argument 'off'").

use super::MountOptions;
use crate::error::{Error, Result};

/// Every long option of `MountOptions` as clap knows it, and whether it is a boolean (one that
/// may be given without a value).
pub fn long_options() -> Vec<(String, bool)> {
    use clap::Args as _;
    MountOptions::augment_args(clap::Command::new("alipanfs"))
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?.to_string();
            Some((long, a.get_num_args().is_some_and(|n| n.min_values() == 0)))
        })
        .collect()
}

/// `--no-NAME` for every switch NAME (`--no-read-only`, `--no-delete-permanently`, ...) is
/// `--NAME=false`, so a switch set in the config file or `-o` can be undone on the command line.
pub fn expand_negations(argv: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let switches = switch_names();
    argv.into_iter()
        .map(|arg| {
            let negated = arg
                .to_str()
                .and_then(|a| a.strip_prefix("--no-"))
                .filter(|name| switches.iter().any(|s| s == name));
            match negated {
                Some(name) => format!("--{name}=false").into(),
                None => arg,
            }
        })
        .collect()
}

/// The command line as clap should see it: `--no-NAME` expanded, and `--NAME off` (two words)
/// refused with the one-word form to use, since clap would take `off` for the mount point.
pub fn prepare_argv(argv: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>> {
    let switches = switch_names();
    let words = argv.iter().map(|a| a.to_str().unwrap_or(""));
    for (arg, next) in words.clone().zip(words.skip(1)) {
        if arg == "--" {
            break;
        }
        let name = arg.strip_prefix("--").unwrap_or("");
        if switches.iter().any(|s| s == name) && super::values::parse_switch(next).is_ok() {
            return Err(Error::Config(format!(
                "--{name} {next}: write --{name}={next} (a switch takes its value after '=')"
            )));
        }
    }
    Ok(expand_negations(argv))
}

fn switch_names() -> Vec<String> {
    long_options()
        .into_iter()
        .filter_map(|(long, switch)| switch.then_some(long))
        .collect()
}
