//! `openFile/list`: ordering, filters and a stable opaque marker.
//!
//! The marker is base64url of `[order_by, direction, sort key, file_id]` of the last item served;
//! the next page is every item strictly after that position. Inserts and deletes between pages
//! therefore never repeat or skip an item that existed throughout.

use super::errors::ApiErr;
use super::files::{drive, file_json, kind_of, parent_folder, ApiResult};
use super::state::{Node, Shared, State};
use super::util::{b64url, b64url_decode, int, s};
use serde_json::{json, Value};
use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq)]
enum Key {
    S(String),
    N(i64),
}

fn key_of(n: &Node, order_by: &str) -> Key {
    match order_by {
        "created_at" => Key::N(n.created_ms),
        "updated_at" => Key::N(n.updated_ms),
        "size" => Key::N(if n.is_dir { 0 } else { n.size as i64 }),
        _ => Key::S(n.name.clone()),
    }
}

/// Numeric-aware comparison for `name_enhanced` ("a2" < "a10").
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.chars().peekable(), b.chars().peekable());
    loop {
        match (x.peek().copied(), y.peek().copied()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let mut na = String::new();
                while let Some(c) = x.peek().copied().filter(char::is_ascii_digit) {
                    na.push(c);
                    x.next();
                }
                let mut nb = String::new();
                while let Some(d) = y.peek().copied().filter(char::is_ascii_digit) {
                    nb.push(d);
                    y.next();
                }
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let o = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                if o != Ordering::Equal {
                    return o;
                }
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(&d);
                }
                x.next();
                y.next();
            }
        }
    }
}

fn key_cmp(a: &Key, b: &Key, order_by: &str) -> Ordering {
    match (a, b) {
        (Key::N(x), Key::N(y)) => x.cmp(y),
        (Key::S(x), Key::S(y)) if order_by == "name_enhanced" => {
            natural_cmp(x, y).then_with(|| x.cmp(y))
        }
        (Key::S(x), Key::S(y)) => x.cmp(y),
        (Key::N(_), Key::S(_)) => Ordering::Less,
        (Key::S(_), Key::N(_)) => Ordering::Greater,
    }
}

fn pos_cmp(a: (&Key, &str), b: (&Key, &str), order_by: &str, desc: bool) -> Ordering {
    let o = key_cmp(a.0, b.0, order_by).then_with(|| a.1.cmp(b.1));
    if desc {
        o.reverse()
    } else {
        o
    }
}

fn encode_marker(order_by: &str, desc: bool, k: &Key, id: &str) -> String {
    let kv = match k {
        Key::S(s) => json!(s),
        Key::N(n) => json!(n),
    };
    let dir = if desc { "DESC" } else { "ASC" };
    b64url(json!([order_by, dir, kv, id]).to_string().as_bytes())
}

fn decode_marker(m: &str) -> Option<(Key, String)> {
    let v: Value = serde_json::from_slice(&b64url_decode(m)?).ok()?;
    let arr = v.as_array()?;
    let key = match arr.get(2)? {
        Value::String(s) => Key::S(s.clone()),
        Value::Number(n) => Key::N(n.as_i64()?),
        _ => return None,
    };
    Some((key, arr.get(3)?.as_str()?.to_string()))
}

pub fn list(sh: &Shared, st: &mut State, v: &Value) -> ApiResult {
    let d = drive(st, v)?;
    let parent = parent_folder(st, &d, v, "parent_file_id")?;
    let limit = match int(v, "limit") {
        None => 50,
        Some(l) if l <= 0 => 50,
        Some(l) if l > 200 => {
            return Err(ApiErr::new(
                400,
                "InvalidParameter.Limit",
                "limit should be less than or equal to 200",
            ))
        }
        // 101..=200 is accepted but a page never holds more than 100 items.
        Some(l) => l.min(100) as usize,
    };
    let order_by = match s(v, "order_by").unwrap_or("") {
        "" => "name",
        o @ ("name" | "name_enhanced" | "created_at" | "updated_at" | "size") => o,
        _ => return Err(ApiErr::param("order_by")),
    };
    let desc = match s(v, "order_direction")
        .unwrap_or("")
        .to_ascii_uppercase()
        .as_str()
    {
        "" | "ASC" => false,
        "DESC" => true,
        _ => return Err(ApiErr::param("order_direction")),
    };
    let ty = match s(v, "type").unwrap_or("") {
        "" | "all" => "all",
        t @ ("file" | "folder") => t,
        _ => return Err(ApiErr::param("type")),
    };
    let cats: Vec<&str> = s(v, "category")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let after = match s(v, "marker").unwrap_or("") {
        "" => None,
        m => Some(decode_marker(m).ok_or_else(|| ApiErr::param("marker"))?),
    };
    let mut items: Vec<(Key, &Node)> = st
        .live_children(&d, &parent)
        .into_iter()
        .filter(|n| match ty {
            "file" => !n.is_dir,
            "folder" => n.is_dir,
            _ => true,
        })
        .filter(|n| {
            ty == "folder" || cats.is_empty() || (!n.is_dir && cats.contains(&kind_of(&n.name).1))
        })
        .map(|n| (key_of(n, order_by), n))
        .filter(|(k, n)| match &after {
            None => true,
            Some((mk, mid)) => {
                pos_cmp((k, &n.file_id), (mk, mid), order_by, desc) == Ordering::Greater
            }
        })
        .collect();
    items.sort_by(|a, b| pos_cmp((&a.0, &a.1.file_id), (&b.0, &b.1.file_id), order_by, desc));
    let more = items.len() > limit;
    items.truncate(limit);
    let next_marker = match (more, items.last()) {
        (true, Some((k, n))) => encode_marker(order_by, desc, k, &n.file_id),
        _ => String::new(),
    };
    let out: Vec<Value> = items.iter().map(|(_, n)| file_json(sh, st, n)).collect();
    Ok(json!({"items": out, "next_marker": next_marker}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a2", "a10"), Ordering::Less);
        assert_eq!(natural_cmp("a10", "a10"), Ordering::Equal);
        assert_eq!(natural_cmp("b", "a10"), Ordering::Greater);
        assert_eq!(natural_cmp("file007", "file7x"), Ordering::Less);
    }

    #[test]
    fn markers_round_trip_and_reject_garbage() {
        let m = encode_marker("size", true, &Key::N(42), "abc");
        assert_eq!(decode_marker(&m), Some((Key::N(42), "abc".to_string())));
        assert_eq!(decode_marker("not a marker"), None);
        assert_eq!(decode_marker(&b64url(b"[1]")), None);
    }
}
