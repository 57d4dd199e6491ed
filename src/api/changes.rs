//! `openFile/search` and the delta feed (`list_delta`, `get_last_cursor`): what the change
//! poller (`crate::poll`) asks the drive. Trashed items are dropped from search pages whatever
//! the server says, as listings drop them.

use serde_json::json;

use super::client::Client;
use super::http::Replay;
use super::limiter::Class;
use super::wire::{DeltaResp, SearchResp};
use crate::drive::{DeltaItem, DeltaOp, DeltaPage, SearchPage, SearchQuery};
use crate::error::{Error, Result};

/// Largest page the API serves.
const MAX_LIMIT: u32 = 100;

impl Client {
    pub(super) async fn search_page(&self, q: &SearchQuery) -> Result<SearchPage> {
        let mut body = json!({
            "query": q.query,
            "limit": q.limit.clamp(1, MAX_LIMIT),
            "marker": q.marker,
            "return_total_count": q.return_total_count,
        });
        if !q.order_by.is_empty() {
            body["order_by"] = json!(q.order_by);
        }
        let r: SearchResp = self
            .call_drive("openFile/search", Class::Other, Replay::Always, body)
            .await?;
        let mut items = Vec::new();
        for f in r.items.unwrap_or_default() {
            if !f.trashed {
                items.push(f.into_item()?);
            }
        }
        Ok(SearchPage {
            items,
            next_marker: r.next_marker.filter(|m| !m.is_empty()),
            total_count: r.total_count,
        })
    }

    pub(super) async fn delta_cursor(&self) -> Result<String> {
        let r: DeltaResp = self
            .call_drive(
                "openFile/get_last_cursor",
                Class::Other,
                Replay::Always,
                json!({}),
            )
            .await?;
        r.cursor
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::BadResponse("get_last_cursor gave no cursor".into()))
    }

    pub(super) async fn delta_page(&self, cursor: &str) -> Result<DeltaPage> {
        let r: DeltaResp = self
            .call_drive(
                "openFile/list_delta",
                Class::Other,
                Replay::Always,
                json!({"cursor": cursor, "limit": MAX_LIMIT}),
            )
            .await?;
        let mut items = Vec::new();
        for d in r.items.unwrap_or_default() {
            let file_id = d
                .file_id
                .or_else(|| d.file.as_ref().and_then(|f| f.file_id.clone()))
                .filter(|id| !id.is_empty())
                .ok_or_else(|| Error::BadResponse("list_delta item without file_id".into()))?;
            let item = match d.file {
                Some(f) if f.file_id.is_some() => Some(f.into_item()?),
                _ => None,
            };
            let op = DeltaOp::parse(d.op.as_deref().unwrap_or(""));
            items.push(DeltaItem { op, file_id, item });
        }
        let cursor = r
            .cursor
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::BadResponse("list_delta gave no cursor".into()))?;
        Ok(DeltaPage {
            items,
            cursor,
            has_more: r.has_more,
        })
    }
}
