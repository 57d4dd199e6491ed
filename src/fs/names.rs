//! Names: what the drive accepts, and how two siblings with the same name are both shown.
//!
//! The drive allows duplicate names in one folder (section 4.2 of the API reference). Inodes are
//! keyed by file_id, so both items exist; their *display* names must differ. Rule: within a group
//! of same-named siblings ordered by (created_at, file_id), the first keeps the name and every
//! later one is shown as `stem (ID8).ext`, ID8 being the first 8 characters of its file_id.
//! E.g. `report.pdf` and `report (65a1f0c2).pdf`. The rule depends only on the listing, so a name
//! is stable for as long as the items are.

use std::collections::HashMap;

use crate::drive::RemoteItem;
use crate::error::{Error, Result};

/// Longest name the drive stores, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;

/// Check a name we are about to send to the drive.
pub fn validate(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidName(name.to_string()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidName(name.to_string()));
    }
    if name.contains('/') || name.contains('\0') {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}

/// The display name of a duplicate: `stem (ID8).ext`.
pub fn disambiguated(name: &str, file_id: &str) -> String {
    let id8: String = file_id.chars().take(8).collect();
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({id8}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({id8})"),
    }
}

/// Display names for a folder's items, in the order given: index i of the result names items[i].
pub fn display_names(items: &[RemoteItem]) -> Vec<String> {
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        groups.entry(item.name.as_str()).or_default().push(i);
    }
    let mut names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
    for (_, mut group) in groups.into_iter().filter(|(_, g)| g.len() > 1) {
        group.sort_by(|&a, &b| {
            (items[a].created_at, &items[a].file_id).cmp(&(items[b].created_at, &items[b].file_id))
        });
        for &i in &group[1..] {
            names[i] = disambiguated(&items[i].name, &items[i].file_id);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drive::ItemKind;
    use std::time::{Duration, UNIX_EPOCH};

    fn item(id: &str, name: &str, created: u64) -> RemoteItem {
        RemoteItem {
            file_id: id.into(),
            parent_file_id: "root".into(),
            name: name.into(),
            kind: ItemKind::File,
            size: 1,
            content_hash: None,
            created_at: UNIX_EPOCH + Duration::from_secs(created),
            updated_at: UNIX_EPOCH + Duration::from_secs(created),
            local_modified_at: None,
            download_url: None,
            streams: Vec::new(),
        }
    }

    #[test]
    fn duplicates_get_the_id_suffix_and_the_oldest_keeps_the_name() {
        let items = vec![
            item("bbbbbbbbbbbb", "a.txt", 20),
            item("aaaaaaaaaaaa", "a.txt", 10),
            item("cccccccccccc", "b", 5),
            item("dddddddddddd", "b", 6),
        ];
        let names = display_names(&items);
        assert_eq!(
            names,
            vec!["a (bbbbbbbb).txt", "a.txt", "b", "b (dddddddd)"]
        );
    }

    #[test]
    fn invalid_names_are_refused() {
        assert!(validate("ok name.txt").is_ok());
        assert!(validate("").is_err());
        assert!(validate("a/b").is_err());
        let long = "x".repeat(1025);
        assert_eq!(validate(&long).unwrap_err().errno(), libc::ENAMETOOLONG);
        assert_eq!(disambiguated(".hidden", "0123456789"), ".hidden (01234567)");
    }
}
