//! Small helpers: identifiers in the real shapes, HMAC-SHA1 signing, query/form decoding, JSON
//! field access that treats `null` as absent.

use base64::Engine;
use rand::Rng;
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn rand_hex(n: usize, upper: bool) -> String {
    let mut rng = rand::thread_rng();
    let bytes: Vec<u8> = (0..n.div_ceil(2)).map(|_| rng.gen()).collect();
    let mut s = if upper {
        hex::encode_upper(bytes)
    } else {
        hex::encode(bytes)
    };
    s.truncate(n);
    s
}

/// file_id: 40 lowercase hex.
pub fn new_file_id() -> String {
    rand_hex(40, false)
}

/// upload_id: 32 uppercase hex.
pub fn new_upload_id() -> String {
    rand_hex(32, true)
}

/// requestId: uppercase UUID.
pub fn request_id() -> String {
    let h = rand_hex(32, true);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn fmt_ms(ms: i64) -> String {
    crate::timefmt::format(UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}

pub fn fmt_secs(secs: u64) -> String {
    crate::timefmt::format(UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// HMAC-SHA1 (RFC 2104); the crate has sha1 but no hmac dependency.
pub fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

pub fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
}

/// Percent-decoding for query strings and form bodies (`+` is a space).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hexval(b[i + 1]), hexval(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hexval(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// A string field; `null`, missing and non-strings are absent.
pub fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A string field that must be present and non-empty.
pub fn s_nonempty<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    s(v, key).filter(|x| !x.is_empty())
}

/// An integer field; numbers or numeric strings (some clients send "100").
pub fn int(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(x) => x.trim().parse().ok(),
        _ => None,
    }
}

pub fn boolean(v: &Value, key: &str) -> Option<bool> {
    match v.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(x) => match x.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_rfc2202_vector() {
        let mac = hmac_sha1(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(hex::encode(mac), "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("a=1&b=x%2By+z&c&d=%zz");
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x+y z");
        assert_eq!(q["c"], "");
        assert_eq!(q["d"], "%zz");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn ids_have_the_real_shapes() {
        assert_eq!(new_file_id().len(), 40);
        let u = new_upload_id();
        assert_eq!(u.len(), 32);
        assert_eq!(u, u.to_uppercase());
        assert_eq!(request_id().len(), 36);
    }
}
