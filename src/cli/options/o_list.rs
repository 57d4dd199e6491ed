//! fstab-style `-o` lists, parsed through the config file's serde attributes so each option's
//! value syntax is declared once.

use serde::Deserialize;

use super::switches::long_options;
use super::MountOptions;
use crate::error::{Error, Result};

impl MountOptions {
    /// Parse fstab-style options (`ro,allow_other,uid=1000,drive=resource`) into the same struct
    /// as the config file, through the same serde attributes: `name=value` sets any long option
    /// (`_` or `-`), a bare `name` sets a boolean (`name=false` clears it), and `ro`/`rw`,
    /// `allow_root` are fstab's spellings. Options that only mean something to mount(8) or systemd
    /// are accepted and ignored; unknown ones are refused by name; secrets are refused (everyone
    /// can read mount options in /proc/mounts and ps).
    pub fn from_o_list(list: &[String]) -> Result<MountOptions> {
        let mut map: Vec<(String, String)> = Vec::new();
        for item in list
            .iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim().replace('_', "-"), Some(v.to_string())),
                None => (item.replace('_', "-"), None),
            };
            let (key, value) = match key.as_str() {
                "ro" => ("read-only".to_string(), value.or(Some("true".into()))),
                "rw" => ("read-only".to_string(), Some("false".into())),
                "allow-root" => ("allow-other".to_string(), value.or(Some("true".into()))),
                // For mount(8), fstab and systemd only.
                "-netdev" | "nofail" | "auto" | "noauto" | "user" | "nouser" | "users" | "defaults"
                | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime" | "noatime"
                | "relatime" | "default-permissions" => continue,
                k if k.starts_with("x-") || k.starts_with("comment") => continue,
                "refresh-token" | "client-secret" => {
                    return Err(Error::Config(format!(
                        "mount option {} is refused: options are visible to every user in /proc/mounts and ps; \
                         use --token-file (alipanfs token set) or the config file",
                        key.replace('-', "_")
                    )))
                }
                _ => (key, value),
            };
            let value = match value {
                Some(v) => v,
                None => match long_options().into_iter().find(|(name, _)| *name == key) {
                    Some((_, true)) => "true".into(),
                    Some((_, false)) => {
                        return Err(Error::Config(format!("mount option {key} needs a value")))
                    }
                    None => return Err(Error::Config(format!("unknown mount option: {item}"))),
                },
            };
            map.retain(|(k, _)| *k != key);
            map.push((key, value));
        }
        let parse = |entries: &[(String, String)]| {
            let de = serde::de::value::MapDeserializer::<_, serde::de::value::Error>::new(
                entries.iter().map(|(k, v)| (k.clone(), OValue(v.clone()))),
            );
            MountOptions::deserialize(de)
        };
        parse(&map).map_err(|e| {
            let msg = e.to_string();
            if let Some(rest) = msg.strip_prefix("unknown field `") {
                let name = rest.split('`').next().unwrap_or(rest);
                return Error::Config(format!("unknown mount option: {name}"));
            }
            // Name the option whose value was refused.
            match map
                .iter()
                .find(|kv| parse(std::slice::from_ref(kv)).is_err())
            {
                Some((k, v)) => Error::Config(format!("mount option {k}={v}: {msg}")),
                None => Error::Config(format!("mount options: {msg}")),
            }
        })
    }
}

/// One `-o` value: text that each field parses as its own type (the config file's types, from
/// the words of a mount option list).
struct OValue(String);

impl<'de> serde::de::IntoDeserializer<'de, serde::de::value::Error> for OValue {
    type Deserializer = OValue;
    fn into_deserializer(self) -> OValue {
        self
    }
}

macro_rules! parse_as {
    ($($method:ident => $visit:ident),* $(,)?) => {$(
        fn $method<V: serde::de::Visitor<'de>>(self, v: V) -> std::result::Result<V::Value, Self::Error> {
            match self.0.trim().parse() {
                Ok(n) => v.$visit(n),
                Err(_) => Err(serde::de::Error::custom(format!("'{}' is not a number", self.0))),
            }
        }
    )*};
}

impl<'de> serde::de::Deserializer<'de> for OValue {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        v.visit_string(self.0)
    }

    fn deserialize_bool<V: serde::de::Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        match self.0.trim().to_ascii_lowercase().as_str() {
            "" | "true" | "yes" | "on" | "1" => v.visit_bool(true),
            "false" | "no" | "off" | "0" => v.visit_bool(false),
            _ => Err(serde::de::Error::custom(format!(
                "'{}' is not a boolean (true or false)",
                self.0
            ))),
        }
    }

    parse_as!(
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16, deserialize_u32 => visit_u32,
        deserialize_u64 => visit_u64, deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64, deserialize_f32 => visit_f32,
        deserialize_f64 => visit_f64,
    );

    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        v.visit_some(self)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> std::result::Result<V::Value, Self::Error> {
        use serde::de::IntoDeserializer;
        v.visit_enum(self.0.to_ascii_lowercase().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}
