//! The value syntaxes options share: sizes (`64M`), octal modes, `off`, and on/off switches, for
//! clap (`parse_*`) and serde (`de_*`, the config file and `-o`) alike.

use serde::Deserialize;

/// Sizes like `4096`, `64K`, `64M`, `1G`, `256MiB` (binary units).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 64M)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("'{s}' has an unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

pub fn parse_octal(s: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
        .map_err(|_| format!("'{s}' is not an octal number"))
}

pub(super) fn de_size<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum SizeValue {
        Num(u64),
        Text(String),
    }
    match Option::<SizeValue>::deserialize(d)? {
        None => Ok(None),
        Some(SizeValue::Num(n)) => Ok(Some(n)),
        Some(SizeValue::Text(s)) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// `off` as a size: never reached.
pub(super) const OFF: u64 = u64::MAX;

/// A size, or `off`.
pub fn parse_size_or_off(s: &str) -> std::result::Result<u64, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" | "no" | "false" | "never" => Ok(OFF),
        _ => parse_size(s),
    }
}

pub(super) fn de_size_or_off<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Num(u64),
        Flag(bool),
        Text(String),
    }
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::Num(n)) => Ok(Some(n)),
        Some(Value::Flag(false)) => Ok(Some(OFF)),
        Some(Value::Flag(true)) => Ok(None),
        Some(Value::Text(s)) => parse_size_or_off(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The words a switch accepts, on every path (command line, `-o`, config file).
pub fn parse_switch(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("'{s}' is not on or off (also true/false, yes/no)")),
    }
}

/// A TOML boolean, or one of the words of `parse_switch`.
pub(super) fn de_switch<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Value {
        Flag(bool),
        Text(String),
    }
    match Option::<Value>::deserialize(d)? {
        None => Ok(None),
        Some(Value::Flag(b)) => Ok(Some(b)),
        Some(Value::Text(s)) => parse_switch(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

pub(super) fn de_octal<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u32>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_octal(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// `--drive-names resource=资源库,backup=备份盘` (`:` also separates pairs, for `-o`): the folder
/// of each drive kind under `--drive all`, kinds not named keeping their own name.
pub fn drive_names(s: &str) -> crate::error::Result<Vec<(String, String)>> {
    use crate::error::Error;
    let mut names: Vec<(String, String)> = ["resource", "backup", "default"]
        .iter()
        .map(|k| (k.to_string(), k.to_string()))
        .collect();
    for pair in s.split([',', ':']).map(str::trim).filter(|p| !p.is_empty()) {
        let (kind, name) = pair.split_once('=').ok_or_else(|| {
            Error::Config(format!(
                "--drive-names {pair:?}: write KIND=NAME, e.g. resource=资源库"
            ))
        })?;
        let (kind, name) = (kind.trim(), name.trim());
        let slot = names.iter_mut().find(|(k, _)| k == kind).ok_or_else(|| {
            Error::Config(format!(
                "--drive-names: {kind:?} is not a drive (resource, backup)"
            ))
        })?;
        crate::fs::names::validate(name)
            .map_err(|_| Error::Config(format!("--drive-names: {name:?} is not a folder name")))?;
        slot.1 = name.to_string();
    }
    for (i, (_, name)) in names.iter().enumerate() {
        if names[..i].iter().any(|(_, other)| other == name) {
            return Err(Error::Config(format!(
                "--drive-names: two drives are named {name:?}"
            )));
        }
    }
    Ok(names)
}
