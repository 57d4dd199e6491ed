//! Dead properties (PROPPATCH): the drive stores none, so they are kept in memory by path for
//! the life of the process, follow MOVE and COPY, and go with DELETE. Windows and macOS set a
//! few per file (times, Finder flags) and read them back in the same session; that is all
//! they need. Bounded: past `MAX_PATHS` paths, a new one is refused with 507.

use std::collections::HashMap;

use dav_server::fs::DavProp;

use crate::sync::{Level, Mutex};

/// At most this many paths carry properties.
const MAX_PATHS: usize = 100_000;

pub struct DeadProps {
    by_path: Mutex<HashMap<String, HashMap<String, DavProp>>>,
}

fn key(prop: &DavProp) -> String {
    format!(
        "{}\u{0}{}",
        prop.namespace.as_deref().unwrap_or(""),
        prop.name
    )
}

/// Whether `path` is `dir` or inside it.
fn within(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path[dir.len()..].starts_with('/'))
}

impl Default for DeadProps {
    fn default() -> Self {
        DeadProps {
            by_path: Mutex::new(
                Level::WEBDAV_PROPS,
                "webdav dead properties",
                HashMap::new(),
            ),
        }
    }
}

impl DeadProps {
    /// Set (`true`) or remove each property; false when the store is full.
    pub fn patch(&self, path: &str, patch: &[(bool, DavProp)]) -> bool {
        let mut all = self.by_path.lock();
        if !all.contains_key(path) && all.len() >= MAX_PATHS {
            return false;
        }
        let props = all.entry(path.to_string()).or_default();
        for (set, prop) in patch {
            if *set {
                props.insert(key(prop), prop.clone());
            } else {
                props.remove(&key(prop));
            }
        }
        if props.is_empty() {
            all.remove(path);
        }
        true
    }

    pub fn list(&self, path: &str) -> Vec<DavProp> {
        self.by_path
            .lock()
            .get(path)
            .map(|props| props.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, path: &str, wanted: &DavProp) -> Option<DavProp> {
        self.by_path.lock().get(path)?.get(&key(wanted)).cloned()
    }

    /// `from` (and everything under it) now lives at `to`.
    pub fn rename(&self, from: &str, to: &str) {
        let mut all = self.by_path.lock();
        all.retain(|path, _| !within(path, to));
        let moved: Vec<String> = all.keys().filter(|p| within(p, from)).cloned().collect();
        for path in moved {
            if let Some(props) = all.remove(&path) {
                all.insert(format!("{to}{}", &path[from.len()..]), props);
            }
        }
    }

    /// A copy of `from` (a file) was made at `to`.
    pub fn copy(&self, from: &str, to: &str) {
        let mut all = self.by_path.lock();
        match all.get(from).cloned() {
            Some(props) => {
                all.insert(to.to_string(), props);
            }
            None => {
                all.remove(to);
            }
        }
    }

    /// `path` (and everything under it) is gone.
    pub fn remove(&self, path: &str) {
        self.by_path.lock().retain(|p, _| !within(p, path));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(name: &str, value: &str) -> DavProp {
        DavProp {
            name: name.into(),
            prefix: Some("x".into()),
            namespace: Some("urn:test".into()),
            xml: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn properties_follow_moves_and_copies_and_go_with_deletes() {
        let props = DeadProps::default();
        assert!(props.patch("/a/f", &[(true, prop("p", "1"))]));
        assert!(props.patch("/a/g", &[(true, prop("q", "2"))]));
        assert!(props.patch("/ab", &[(true, prop("r", "3"))]));
        props.rename("/a", "/b");
        assert!(props.list("/a/f").is_empty());
        assert_eq!(
            props.get("/b/f", &prop("p", "")).unwrap().xml,
            prop("p", "1").xml
        );
        assert_eq!(
            props.list("/ab").len(),
            1,
            "a sibling with a common prefix stays"
        );
        props.copy("/b/g", "/c");
        assert_eq!(props.list("/c").len(), 1);
        props.remove("/b");
        assert!(props.list("/b/g").is_empty());
        assert_eq!(props.list("/c").len(), 1);
        assert!(props.patch("/c", &[(false, prop("q", ""))]));
        assert!(props.list("/c").is_empty());
    }
}
