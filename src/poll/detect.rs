//! Finding what changed on the drive since the last poll, at the fewest calls.
//!
//! Two feeds, chosen once at start:
//! - **delta**: `get_last_cursor` answered, so `list_delta` from the cursor gives every change
//!   (trash and delete included) in order: one call when nothing changed. An expired or refused
//!   cursor starts over from a new one and reports an overflow (the caller revalidates).
//! - **search**: `search` for `updated_at >= W` ordered by `updated_at ASC`, where W is the
//!   newest `updated_at` seen so far (the drive's clock, never ours), truncated to the second the
//!   query grammar takes. Items seen at exactly that time are remembered and skipped, so an idle
//!   poll costs one call and returns nothing. Search never returns items in the recycle bin, so a
//!   trash or delete shows only when its folder is revalidated (`folder_count`, one call).
//!
//! Either way a poll reads at most `MAX_PAGES` pages: the delta feed goes on from its cursor next
//! time; search, which cannot, reports an overflow.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::drive::{DeltaOp, Drive, RemoteItem, SearchQuery};
use crate::error::{Error, Result};

/// Pages (of 100) one poll reads before it calls the rest an overflow.
pub const MAX_PAGES: u32 = 5;
const PAGE: u32 = 100;

/// Which way changes are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    Delta,
    Search,
}

impl FeedKind {
    pub fn name(self) -> &'static str {
        match self {
            FeedKind::Delta => "delta",
            FeedKind::Search => "search",
        }
    }
}

/// What one poll found.
#[derive(Debug, Default)]
pub struct Found {
    /// Items created, changed, renamed or moved, as the drive has them now.
    pub items: Vec<RemoteItem>,
    /// Ids the feed says were trashed or deleted.
    pub gone: Vec<String>,
    /// The folders of those the feed still describes (a trashed item), so their stored listings
    /// go even when the mount has not seen the item itself.
    pub gone_from: Vec<String>,
    /// The feed cannot say everything that changed (a lost cursor, more changes than one poll
    /// reads): every folder in use must be revalidated.
    pub overflow: bool,
    /// API calls this poll made.
    pub calls: u32,
}

impl Found {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.gone.is_empty() && !self.overflow
    }
}

enum Feed {
    Delta { cursor: String },
    Search(Watermark),
}

/// The newest change time seen, and the items seen at that time (skipped when seen again).
#[derive(Debug, Default)]
struct Watermark {
    at: Option<SystemTime>,
    seen: HashMap<String, SystemTime>,
    /// The service refused a time with milliseconds: whole seconds from then on.
    whole_seconds: bool,
}

impl Watermark {
    /// Notes an item; true when it is news (not seen before at this `updated_at`).
    fn note(&mut self, item: &RemoteItem) -> bool {
        let news = self.seen.get(&item.file_id) != Some(&item.updated_at);
        self.seen.insert(item.file_id.clone(), item.updated_at);
        if self.at.is_none_or(|at| at < item.updated_at) {
            self.at = Some(item.updated_at);
        }
        news
    }

    /// Where the next query starts: the watermark, or its whole second.
    fn from(&self) -> Option<SystemTime> {
        let at = self.at?;
        Some(if self.whole_seconds {
            floor_second(at)
        } else {
            floor_milli(at)
        })
    }

    /// Forgets items older than where the next query starts.
    fn trim(&mut self) {
        if let Some(from) = self.from() {
            self.seen.retain(|_, t| *t >= from);
        }
    }

    fn query(&self) -> String {
        match self.from() {
            Some(t) if self.whole_seconds => format!("updated_at >= '{}'", time_string(t, "")),
            Some(t) => format!("updated_at >= '{}'", time_string(t, "%.3f")),
            None => String::new(),
        }
    }
}

fn floor_second(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

fn floor_milli(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

/// `2024-05-01T10:00:00` (the form the search grammar documents, UTC), with `fraction` (`%.3f`)
/// for milliseconds: a whole second can hold more changes than a poll reads.
fn time_string(t: SystemTime, fraction: &str) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format(&format!("%Y-%m-%dT%H:%M:%S{fraction}"))
        .to_string()
}

pub struct Detector {
    drive: Arc<dyn Drive>,
    feed: Feed,
}

/// Where a detector is: saved by a mount after each poll, so the next mount of the drive goes
/// on from there and learns what changed while none was running (or since a crash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "feed", rename_all = "snake_case")]
pub enum Position {
    Delta {
        cursor: String,
    },
    /// The newest change time seen, in milliseconds since the epoch, and the items seen at or
    /// after where the next query starts (id, `updated_at` in ms), so a new mount does not take
    /// them for news.
    Search {
        at_ms: u64,
        whole_seconds: bool,
        #[serde(default)]
        seen: Vec<(String, u64)>,
    },
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

impl Detector {
    /// Probes the delta feed (one call) and, without it, finds the newest change on the drive
    /// and what else changed in that second (two more calls), so the first poll reports only
    /// what changes from now on.
    pub async fn start(drive: Arc<dyn Drive>) -> Result<Detector> {
        let feed = match drive.last_cursor().await {
            Ok(cursor) => Feed::Delta { cursor },
            Err(e) if e.is_transient() => return Err(e),
            Err(_) => {
                let mut mark = Watermark::default();
                let newest = drive
                    .search(&SearchQuery {
                        order_by: "updated_at DESC".into(),
                        limit: 1,
                        ..Default::default()
                    })
                    .await?;
                match newest.items.first() {
                    Some(item) => {
                        mark.note(item);
                    }
                    // An empty drive: anything from now on is news.
                    None => mark.at = Some(SystemTime::now() - Duration::from_secs(60)),
                }
                // Items changed in the same second as the newest are not news either.
                poll_search(drive.as_ref(), &mut mark).await?;
                Feed::Search(mark)
            }
        };
        Ok(Detector { drive, feed })
    }

    /// Goes on from where a previous mount's detector was, if the drive still offers that feed
    /// (one probe call); else starts afresh (`start`). The first poll then reports what changed
    /// since `pos` (an expired delta cursor reports an overflow).
    /// True with it when it goes on from `pos`.
    pub async fn resume(drive: Arc<dyn Drive>, pos: Position) -> Result<(Detector, bool)> {
        let delta = match drive.last_cursor().await {
            Ok(_) => true,
            Err(e) if e.is_transient() => return Err(e),
            Err(_) => false,
        };
        let feed = match pos {
            Position::Delta { cursor } if delta => Feed::Delta { cursor },
            Position::Search {
                at_ms,
                whole_seconds,
                seen,
            } if !delta => Feed::Search(Watermark {
                at: Some(from_ms(at_ms)),
                seen: seen.into_iter().map(|(id, t)| (id, from_ms(t))).collect(),
                whole_seconds,
            }),
            _ => return Ok((Detector::start(drive).await?, false)),
        };
        Ok((Detector { drive, feed }, true))
    }

    /// Where this detector is now (None before a search feed has seen any change time).
    pub fn position(&self) -> Option<Position> {
        match &self.feed {
            Feed::Delta { cursor } => Some(Position::Delta {
                cursor: cursor.clone(),
            }),
            Feed::Search(mark) => mark.at.map(|at| Position::Search {
                at_ms: to_ms(at),
                whole_seconds: mark.whole_seconds,
                seen: mark
                    .seen
                    .iter()
                    .map(|(id, t)| (id.clone(), to_ms(*t)))
                    .collect(),
            }),
        }
    }

    pub fn kind(&self) -> FeedKind {
        match self.feed {
            Feed::Delta { .. } => FeedKind::Delta,
            Feed::Search(_) => FeedKind::Search,
        }
    }

    /// One poll: what changed since the last one.
    pub async fn poll(&mut self) -> Result<Found> {
        let drive = self.drive.clone();
        match &mut self.feed {
            Feed::Delta { cursor } => poll_delta(drive.as_ref(), cursor).await,
            Feed::Search(mark) => poll_search(drive.as_ref(), mark).await,
        }
    }

    /// How many items a folder holds now (one `search` call), for revalidating a folder in
    /// use: a count that differs from its listing's means something left or arrived.
    /// `Error::NotSupported` when the drive gives no count (then relist it instead).
    pub async fn folder_count(&self, folder_id: &str) -> Result<u64> {
        let page = self
            .drive
            .search(&SearchQuery {
                query: format!("parent_file_id = '{}'", quote(folder_id)),
                limit: 1,
                return_total_count: true,
                ..Default::default()
            })
            .await?;
        page.total_count
            .ok_or_else(|| Error::NotSupported("search without total_count".into()))
    }
}

/// A value inside single quotes in the search grammar.
fn quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\'', "\\'")
}

async fn poll_search(drive: &dyn Drive, mark: &mut Watermark) -> Result<Found> {
    let mut found = Found::default();
    let mut marker = String::new();
    // One query for the whole poll: its pages are offsets into one result.
    let mut query = mark.query();
    for _ in 0..MAX_PAGES {
        let q = SearchQuery {
            query: query.clone(),
            order_by: "updated_at ASC".into(),
            limit: PAGE,
            marker: marker.clone(),
            return_total_count: false,
        };
        found.calls += 1;
        let page = match drive.search(&q).await {
            Err(e) if !e.is_transient() && !mark.whole_seconds && marker.is_empty() => {
                tracing::info!(
                    "search refused a time with milliseconds ({e}): using whole seconds"
                );
                mark.whole_seconds = true;
                query = mark.query();
                found.calls += 1;
                drive
                    .search(&SearchQuery {
                        query: query.clone(),
                        ..q
                    })
                    .await?
            }
            page => page?,
        };
        for item in page.items {
            if mark.note(&item) {
                found.items.push(item);
            }
        }
        match page.next_marker {
            Some(next) if next != marker => marker = next,
            _ => {
                mark.trim();
                return Ok(found);
            }
        }
    }
    // More than a poll reads: the watermark moved to the newest item read; the rest shows next
    // time, and folders in use are revalidated meanwhile.
    mark.trim();
    found.overflow = true;
    Ok(found)
}

async fn poll_delta(drive: &dyn Drive, cursor: &mut String) -> Result<Found> {
    let mut found = Found::default();
    let mut refetch = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = match drive.list_delta(cursor).await {
            Ok(page) => page,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                // A cursor the drive no longer knows: start over; what happened meanwhile is
                // unknown.
                tracing::warn!("delta feed: {e}; starting over from the newest change");
                *cursor = drive.last_cursor().await?;
                found.calls += 2;
                found.overflow = true;
                return Ok(found);
            }
        };
        found.calls += 1;
        for d in page.items {
            match (d.op, d.item) {
                (DeltaOp::Trash | DeltaOp::Delete, item) => {
                    found.gone.push(d.file_id);
                    found.gone_from.extend(item.map(|i| i.parent_file_id));
                }
                (_, Some(item)) => found.items.push(item),
                (_, None) => refetch.push(d.file_id),
            }
        }
        // What a poll leaves unread waits at the cursor for the next one.
        *cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    for id in refetch {
        found.calls += 1;
        match drive.get(&id).await {
            Ok(item) => found.items.push(item),
            Err(Error::NotFound(_) | Error::InRecycleBin(_)) => found.gone.push(id),
            Err(e) => return Err(e),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_times_are_utc_milliseconds_or_whole_seconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_714_557_600_500_900);
        let mut m = Watermark::default();
        assert_eq!(m.query(), "");
        m.at = Some(t);
        assert_eq!(m.query(), "updated_at >= '2024-05-01T10:00:00.500'");
        m.whole_seconds = true;
        assert_eq!(m.query(), "updated_at >= '2024-05-01T10:00:00'");
    }

    #[test]
    fn quotes_in_ids_are_escaped() {
        assert_eq!(quote("a'b\\c"), "a\\'b\\\\c");
    }
}
