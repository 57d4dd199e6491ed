//! `openFile/search`: the query grammar, order, paging and `return_total_count` (API doc 3.6).
//!
//! Grammar: conditions `field op value` joined by `and` / `or` (`and` binds tighter),
//! parentheses allowed, at most `MAX_CONDITIONS` conditions. Operators: `=`, `!=`, `>`, `>=`, `<`,
//! `<=`, `match` (case-insensitive substring, the service's "fuzzy"), `in ('a','b')`. Values are
//! single-quoted strings (`\'` escapes a quote) or bare numbers and booleans. Fields: `name`,
//! `file_id`, `parent_file_id`, `file_extension`, `type` (`file`/`folder`), `category`,
//! `created_at`, `updated_at` (`'2019-01-14T00:00:00'`, fractions and a zone optional, UTC
//! assumed), `size`, `starred`. Items in the recycle bin (trashed or under a trashed folder) and
//! unfinished uploads are never found. `order_by` is `"field [ASC|DESC]"` (default
//! `updated_at DESC`, ties by file_id); the marker is opaque (base64url of the next offset).

use super::errors::ApiErr;
use super::files::{drive, file_json, kind_of, ApiResult};
use super::state::{Node, Shared, State};
use super::util::{b64url, b64url_decode, boolean, int, s};
use serde_json::{json, Value};
use std::cmp::Ordering;

pub const MAX_CONDITIONS: usize = 5;

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    List(Vec<Lit>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Match,
    In,
}

#[derive(Debug, Clone, PartialEq)]
enum Query {
    Cond(String, CmpOp, Lit),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

fn invalid(why: &str) -> ApiErr {
    ApiErr::new(
        400,
        "InvalidParameter.Query",
        format!("The input parameter query is not valid. {why}"),
    )
}

fn tokens(q: &str) -> Result<Vec<Tok>, ApiErr> {
    let mut out = Vec::new();
    let mut it = q.chars().peekable();
    while let Some(&c) = it.peek() {
        match c {
            c if c.is_whitespace() => {
                it.next();
            }
            '(' | ')' | ',' => {
                it.next();
                out.push(match c {
                    '(' => Tok::Open,
                    ')' => Tok::Close,
                    _ => Tok::Comma,
                });
            }
            '\'' | '"' => {
                it.next();
                let mut v = String::new();
                loop {
                    match it.next() {
                        None => return Err(invalid("unterminated string")),
                        Some('\\') => v.extend(it.next()),
                        Some(x) if x == c => break,
                        Some(x) => v.push(x),
                    }
                }
                out.push(Tok::Str(v));
            }
            '=' | '!' | '<' | '>' => {
                it.next();
                let eq = it.peek() == Some(&'=');
                if eq {
                    it.next();
                }
                out.push(Tok::Op(match (c, eq) {
                    ('=', _) => "=",
                    ('!', true) => "!=",
                    ('<', false) => "<",
                    ('<', true) => "<=",
                    ('>', false) => ">",
                    ('>', true) => ">=",
                    _ => return Err(invalid("'!' must be followed by '='")),
                }));
            }
            _ => {
                let mut w = String::new();
                while let Some(&x) = it.peek() {
                    if x.is_whitespace() || "()=!<>,'\"".contains(x) {
                        break;
                    }
                    w.push(x);
                    it.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    at: usize,
    conditions: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }

    fn or(&mut self) -> Result<Query, ApiErr> {
        let mut q = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            q = Query::Or(Box::new(q), Box::new(self.and()?));
        }
        Ok(q)
    }

    fn and(&mut self) -> Result<Query, ApiErr> {
        let mut q = self.term()?;
        while self.keyword("and") {
            self.at += 1;
            q = Query::And(Box::new(q), Box::new(self.term()?));
        }
        Ok(q)
    }

    fn term(&mut self) -> Result<Query, ApiErr> {
        if self.peek() == Some(&Tok::Open) {
            self.at += 1;
            let q = self.or()?;
            return match self.next() {
                Some(Tok::Close) => Ok(q),
                _ => Err(invalid("missing ')'")),
            };
        }
        let field = match self.next() {
            Some(Tok::Word(w)) => w,
            _ => return Err(invalid("expected a field name")),
        };
        let op = match self.next() {
            Some(Tok::Op(o)) => match o {
                "=" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                ">" => CmpOp::Gt,
                ">=" => CmpOp::Ge,
                "<" => CmpOp::Lt,
                _ => CmpOp::Le,
            },
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("match") => CmpOp::Match,
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("in") => CmpOp::In,
            _ => return Err(invalid(&format!("expected an operator after {field}"))),
        };
        let value = if op == CmpOp::In {
            self.list()?
        } else {
            self.literal()?
        };
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(invalid("at most 5 conditions"));
        }
        check_field(&field)?;
        Ok(Query::Cond(field, op, value))
    }

    fn list(&mut self) -> Result<Lit, ApiErr> {
        if self.next() != Some(Tok::Open) {
            return Err(invalid("'in' takes a list: in ('a', 'b')"));
        }
        let mut items = vec![self.literal()?];
        loop {
            match self.next() {
                Some(Tok::Comma) => items.push(self.literal()?),
                Some(Tok::Close) => return Ok(Lit::List(items)),
                _ => return Err(invalid("unterminated list")),
            }
        }
    }

    fn literal(&mut self) -> Result<Lit, ApiErr> {
        match self.next() {
            Some(Tok::Str(v)) => Ok(Lit::Str(v)),
            Some(Tok::Word(w)) if w == "true" || w == "false" => Ok(Lit::Bool(w == "true")),
            Some(Tok::Word(w)) => w
                .parse()
                .map(Lit::Num)
                .map_err(|_| invalid(&format!("bad value {w}: quote strings"))),
            _ => Err(invalid("expected a value")),
        }
    }
}

const FIELDS: &[&str] = &[
    "name",
    "file_id",
    "parent_file_id",
    "file_extension",
    "type",
    "category",
    "created_at",
    "updated_at",
    "size",
    "starred",
];

fn check_field(f: &str) -> Result<(), ApiErr> {
    if FIELDS.contains(&f) {
        Ok(())
    } else {
        Err(invalid(&format!("unknown field {f}")))
    }
}

fn parse(q: &str) -> Result<Option<Query>, ApiErr> {
    let toks = tokens(q)?;
    if toks.is_empty() {
        return Ok(None);
    }
    let mut p = Parser {
        toks,
        at: 0,
        conditions: 0,
    };
    let query = p.or()?;
    if p.at != p.toks.len() {
        return Err(invalid("unexpected text after the query"));
    }
    Ok(Some(query))
}

/// Milliseconds since the epoch of a query time (`2019-01-14T00:00:00`, optional fraction, `Z`
/// or offset; UTC when no zone is given).
fn time_ms(v: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.timestamp_millis());
    }
    let v = v.trim_end_matches('Z');
    [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
    .map(|t| t.and_utc().timestamp_millis())
}

/// A node's value of `field`, as a literal to compare.
fn field_of(n: &Node, field: &str) -> Lit {
    let (ext, cat, _) = kind_of(&n.name);
    match field {
        "name" => Lit::Str(n.name.clone()),
        "file_id" => Lit::Str(n.file_id.clone()),
        "parent_file_id" => Lit::Str(n.parent.clone()),
        "file_extension" if !n.is_dir => Lit::Str(ext),
        "type" => Lit::Str(if n.is_dir { "folder" } else { "file" }.into()),
        "category" if !n.is_dir => Lit::Str(cat.into()),
        "created_at" => Lit::Num(n.created_ms as f64),
        "updated_at" => Lit::Num(n.updated_ms as f64),
        "size" => Lit::Num(if n.is_dir { 0.0 } else { n.size as f64 }),
        "starred" => Lit::Bool(n.starred),
        _ => Lit::Str(String::new()),
    }
}

fn order(a: &Lit, b: &Lit, field: &str) -> Option<Ordering> {
    match (a, b) {
        (Lit::Num(x), Lit::Num(y)) => x.partial_cmp(y),
        (Lit::Num(x), Lit::Str(t)) if field.ends_with("_at") => {
            x.partial_cmp(&(time_ms(t)? as f64))
        }
        (Lit::Num(x), Lit::Str(t)) => x.partial_cmp(&t.parse::<f64>().ok()?),
        (Lit::Str(x), Lit::Str(y)) => Some(x.cmp(y)),
        (Lit::Bool(x), Lit::Bool(y)) => Some(x.cmp(y)),
        (Lit::Bool(x), Lit::Str(t)) => Some(x.cmp(&(t == "true"))),
        _ => None,
    }
}

fn matches(q: &Query, n: &Node) -> bool {
    match q {
        Query::And(a, b) => matches(a, n) && matches(b, n),
        Query::Or(a, b) => matches(a, n) || matches(b, n),
        Query::Cond(field, op, want) => {
            let have = field_of(n, field);
            let cmp = |w: &Lit| order(&have, w, field);
            match op {
                CmpOp::Eq => cmp(want) == Some(Ordering::Equal),
                CmpOp::Ne => cmp(want) != Some(Ordering::Equal),
                CmpOp::Gt => cmp(want) == Some(Ordering::Greater),
                CmpOp::Ge => matches!(cmp(want), Some(Ordering::Greater | Ordering::Equal)),
                CmpOp::Lt => cmp(want) == Some(Ordering::Less),
                CmpOp::Le => matches!(cmp(want), Some(Ordering::Less | Ordering::Equal)),
                CmpOp::Match => match (&have, want) {
                    (Lit::Str(h), Lit::Str(w)) => h.to_lowercase().contains(&w.to_lowercase()),
                    _ => false,
                },
                CmpOp::In => match want {
                    Lit::List(ws) => ws.iter().any(|w| cmp(w) == Some(Ordering::Equal)),
                    _ => false,
                },
            }
        }
    }
}

fn order_by(v: &Value) -> Result<(String, bool), ApiErr> {
    let spec = s(v, "order_by").unwrap_or("updated_at DESC").trim();
    let mut words = spec.split_whitespace();
    let field = words.next().unwrap_or("updated_at").to_string();
    let desc = match words.next().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(_) => return Err(ApiErr::param("order_by")),
    };
    if !["name", "created_at", "updated_at", "size"].contains(&field.as_str()) {
        return Err(ApiErr::param("order_by"));
    }
    Ok((field, desc))
}

/// `openFile/search` (counted in the "other" rate class).
pub fn search(sh: &Shared, st: &State, v: &Value) -> ApiResult {
    let drive_id = drive(st, v)?;
    let query = parse(s(v, "query").unwrap_or(""))?;
    let limit = match int(v, "limit") {
        None => 100,
        Some(l) if (1..=100).contains(&l) => l as usize,
        Some(_) => return Err(ApiErr::param("limit")),
    };
    let (field, desc) = order_by(v)?;
    let offset = match s(v, "marker").filter(|m| !m.is_empty()) {
        None => 0,
        Some(m) => b64url_decode(m)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.strip_prefix("o:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| ApiErr::param("marker"))?,
    };
    let mut found: Vec<&Node> = st
        .nodes
        .values()
        .filter(|n| n.drive_id == drive_id && !n.pending && n.file_id != "root")
        .filter(|n| query.as_ref().is_none_or(|q| matches(q, n)))
        .filter(|n| !st.in_bin(&n.file_id))
        .collect();
    found.sort_by(|a, b| {
        let o = order(&field_of(a, &field), &field_of(b, &field), &field)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.file_id.cmp(&b.file_id));
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    let total = found.len();
    let page: Vec<Value> = found
        .iter()
        .skip(offset)
        .take(limit)
        .map(|n| file_json(sh, st, n))
        .collect();
    let next = if offset + page.len() < total {
        b64url(format!("o:{}", offset + page.len()).as_bytes())
    } else {
        String::new()
    };
    let mut out = json!({"items": page, "next_marker": next});
    if boolean(v, "return_total_count").unwrap_or(false) {
        out["total_count"] = json!(total);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn and_binds_tighter_than_or_and_parentheses_group() {
        let q = parse("name = 'a' or name = 'b' and type = 'file'")
            .unwrap()
            .unwrap();
        assert!(matches!(q, Query::Or(_, _)));
        let q = parse("(name = 'a' or name = 'b') and type = 'file'")
            .unwrap()
            .unwrap();
        assert!(matches!(q, Query::And(_, _)));
    }

    #[test]
    fn strings_escape_quotes_and_lists_parse() {
        let q = parse(r"name = 'it\'s' and file_extension in ('mp4', 'mkv')")
            .unwrap()
            .unwrap();
        let Query::And(a, b) = q else { panic!() };
        assert_eq!(
            *a,
            Query::Cond("name".into(), CmpOp::Eq, Lit::Str("it's".into()))
        );
        assert!(matches!(*b, Query::Cond(_, CmpOp::In, Lit::List(ref l)) if l.len() == 2));
    }

    #[test]
    fn bad_queries_are_refused() {
        for q in [
            "name = ",
            "nome = 'x'",
            "name = 'x",
            "name 'x'",
            "(name = 'x'",
            "name = 'a' and name = 'b' and name = 'c' and name = 'd' and name = 'e' and name = 'f'",
        ] {
            assert!(parse(q).is_err(), "{q} should be refused");
        }
    }

    #[test]
    fn times_compare_with_or_without_zone_and_fraction() {
        let mut n = State::new_node("d", "root", "x.mp4", false);
        n.updated_ms = time_ms("2024-05-01T10:00:00.500Z").unwrap();
        for (q, want) in [
            ("updated_at > '2024-05-01T10:00:00'", true),
            ("updated_at > '2024-05-01T10:00:00.600Z'", false),
            ("updated_at >= '2024-05-01T10:00:00.500+00:00'", true),
            ("updated_at < '2024-05-01 10:00:01'", true),
            ("name match 'X.M' and category = 'video'", true),
            ("type = 'folder'", false),
        ] {
            assert_eq!(matches(&parse(q).unwrap().unwrap(), &n), want, "{q}");
        }
    }
}
