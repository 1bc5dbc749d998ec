//! Bounds on what one tool result may hold: an item cap, a byte cap, cursors to continue, and an
//! explicit `truncated` flag with a hint on how to narrow the question.
//!
//! A tool's cursor wraps the API's opaque cursor and a count of items to skip on that API page, so
//! a result cut short by the byte cap continues exactly where it stopped without ever forging an
//! API cursor. Cursors name the tool that issued them, so one tool's cursor is refused by another.

use std::future::Future;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use serde::{Deserialize, Serialize};

use crate::api::Page;
use crate::error::Error;

/// Items one result returns unless the model asks for fewer.
pub const DEFAULT_ITEMS: u32 = 20;
/// The most items one result may return.
pub const MAX_ITEMS: u32 = 50;
/// The most bytes of serialized items one result may carry (about 6,000 tokens).
pub const MAX_ITEM_BYTES: usize = 24 * 1024;
/// The largest page the API serves.
pub const API_MAX_PAGE: u32 = 200;

/// What a cursor carries, base64url-encoded JSON: opaque to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The tool that issued it.
    #[serde(rename = "t")]
    pub tool: String,
    /// The API's cursor of the page to read (absent: the first page).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub api_cursor: Option<String>,
    /// Items of that page (or, for tools that rank a whole scan, of the ranking) already returned.
    #[serde(rename = "s", default)]
    pub skip: u32,
}

/// One bounded slice of a longer list.
#[derive(Debug, Clone)]
pub struct Slice<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next slice; absent when this one ends the list.
    pub next_cursor: Option<String>,
    /// True when the list goes on (`next_cursor`) or items were held back by the byte cap.
    pub truncated: bool,
}

/// Progress notifications for one request, when the client asked for them.
#[derive(Debug, Clone)]
pub struct Progress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes a cursor issued by `tool`; anything else is an [`Error::InvalidInput`].
    pub fn decode(text: &str, tool: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::InvalidInput(format!(
                "`cursor` is not a next_cursor returned by {tool}; call again without it to start over"
            ))
        };
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.tool != tool {
            return Err(invalid());
        }
        Ok(cursor)
    }
}

/// The requested item count, within 1 and [`MAX_ITEMS`].
pub fn item_limit(requested: Option<u32>) -> u32 {
    requested.unwrap_or(DEFAULT_ITEMS).clamp(1, MAX_ITEMS)
}

/// Keeps the longest prefix of `items` whose JSON fits in `max_bytes` (always at least one item,
/// so a single large item still comes through).
pub fn within_bytes<T: Serialize>(mut items: Vec<T>, max_bytes: usize) -> Vec<T> {
    let mut used = 2;
    let mut keep = 0;
    for item in &items {
        let size = serde_json::to_vec(item).map_or(0, |bytes| bytes.len()) + 1;
        if keep > 0 && used + size > max_bytes {
            break;
        }
        used += size;
        keep += 1;
    }
    items.truncate(keep);
    items
}

/// Reads one slice of an API list: decodes `cursor`, fetches the API page it points to, skips what
/// was already returned, turns the items into what the result shows (`present`) and applies the
/// item and byte caps to those.
pub async fn api_slice<T, U, F, Fut, P>(
    tool: &str,
    cursor: Option<&str>,
    limit: Option<u32>,
    fetch: F,
    present: P,
) -> Result<Slice<U>, Error>
where
    U: Serialize,
    F: FnOnce(Option<String>, u32) -> Fut,
    Fut: Future<Output = Result<Page<T>, Error>>,
    P: FnMut(T) -> U,
{
    let limit = item_limit(limit);
    let position = match cursor {
        Some(text) if !text.trim().is_empty() => Cursor::decode(text, tool)?,
        _ => Cursor {
            tool: tool.to_owned(),
            api_cursor: None,
            skip: 0,
        },
    };
    let skip = position.skip.min(API_MAX_PAGE - 1);
    let page = fetch(
        position.api_cursor.clone(),
        (skip + limit).min(API_MAX_PAGE),
    )
    .await?;
    let available: Vec<T> = page.items.into_iter().skip(skip as usize).collect();
    let available_count = available.len();
    let wanted: Vec<U> = available
        .into_iter()
        .take(limit as usize)
        .map(present)
        .collect();
    let items = within_bytes(wanted, MAX_ITEM_BYTES);
    let next_cursor = if items.len() < available_count {
        Some(Cursor {
            tool: tool.to_owned(),
            api_cursor: position.api_cursor,
            skip: skip + items.len() as u32,
        })
    } else {
        page.next_cursor.map(|api_cursor| Cursor {
            tool: tool.to_owned(),
            api_cursor: Some(api_cursor),
            skip: 0,
        })
    };
    Ok(Slice {
        truncated: next_cursor.is_some(),
        next_cursor: next_cursor.map(|cursor| cursor.encode()),
        items,
    })
}

/// One slice of a list this server ranked itself (a whole scan), at the cursor's offset.
pub fn ranked_slice<T: Serialize>(
    tool: &str,
    ranked: Vec<T>,
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Result<Slice<T>, Error> {
    let limit = item_limit(limit) as usize;
    let offset = match cursor {
        Some(text) if !text.trim().is_empty() => Cursor::decode(text, tool)?.skip as usize,
        _ => 0,
    };
    let total = ranked.len();
    let mut items: Vec<T> = ranked.into_iter().skip(offset).collect();
    items.truncate(limit);
    let items = within_bytes(items, MAX_ITEM_BYTES);
    let end = offset + items.len();
    let next_cursor = (end < total).then(|| {
        Cursor {
            tool: tool.to_owned(),
            api_cursor: None,
            skip: end as u32,
        }
        .encode()
    });
    Ok(Slice {
        truncated: next_cursor.is_some(),
        next_cursor,
        items,
    })
}

impl Progress {
    /// Progress for the request of `context` (silent when it carries no progress token).
    pub fn of(context: &RequestContext<RoleServer>) -> Self {
        Self {
            peer: context.peer.clone(),
            token: context.meta.get_progress_token(),
        }
    }

    /// Reports `done` of `total` (when known); failures to notify are ignored.
    pub async fn report(&self, done: u32, total: Option<u32>, message: impl Into<String>) {
        let Some(token) = &self.token else {
            return;
        };
        let mut notification = ProgressNotificationParam::new(token.clone(), f64::from(done));
        notification.total = total.map(f64::from);
        notification.message = Some(message.into());
        if let Err(error) = self.peer.notify_progress(notification).await {
            tracing::debug!(%error, "could not send a progress notification");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: std::ops::Range<u32>, next: Option<&str>) -> Page<u32> {
        Page {
            items: items.collect(),
            next_cursor: next.map(str::to_owned),
        }
    }

    #[test]
    fn a_cursor_round_trips_and_names_its_tool() {
        let cursor = Cursor {
            tool: "list_alerts".into(),
            api_cursor: Some("abc".into()),
            skip: 3,
        };
        assert_eq!(
            Cursor::decode(&cursor.encode(), "list_alerts").unwrap(),
            cursor
        );
        assert!(Cursor::decode(&cursor.encode(), "list_incidents").is_err());
        assert!(Cursor::decode("not a cursor", "list_alerts").is_err());
    }

    #[test]
    fn the_byte_cap_keeps_a_prefix_and_at_least_one_item() {
        let items = vec!["x".repeat(10), "y".repeat(10), "z".repeat(10)];
        assert_eq!(within_bytes(items.clone(), 30).len(), 2);
        assert_eq!(within_bytes(items.clone(), 1).len(), 1);
        assert_eq!(within_bytes(items, 10_000).len(), 3);
    }

    #[tokio::test]
    async fn slices_continue_on_the_next_api_page() {
        let first = api_slice(
            "t",
            None,
            Some(5),
            async |cursor, limit| {
                assert_eq!((cursor, limit), (None, 5));
                Ok(page(0..5, Some("page2")))
            },
            |n| n,
        )
        .await
        .unwrap();
        assert_eq!(first.items, vec![0, 1, 2, 3, 4]);
        assert!(first.truncated);
        let second = api_slice(
            "t",
            first.next_cursor.as_deref(),
            Some(5),
            async |cursor, limit| {
                assert_eq!((cursor.as_deref(), limit), (Some("page2"), 5));
                Ok(page(5..7, None))
            },
            |n| n,
        )
        .await
        .unwrap();
        assert_eq!(second.items, vec![5, 6]);
        assert!(!second.truncated && second.next_cursor.is_none());
    }

    #[tokio::test]
    async fn a_slice_cut_by_bytes_resumes_on_the_same_api_page() {
        let big = |range: std::ops::Range<u32>| {
            range
                .map(|n| format!("{n}{}", "x".repeat(MAX_ITEM_BYTES / 3)))
                .collect::<Vec<_>>()
        };
        let first = api_slice(
            "t",
            None,
            Some(5),
            async |_, _| {
                Ok(Page {
                    items: big(0..5),
                    next_cursor: None,
                })
            },
            |item| item,
        )
        .await
        .unwrap();
        assert_eq!(first.items.len(), 2);
        assert!(first.truncated);
        let cursor = Cursor::decode(first.next_cursor.as_deref().unwrap(), "t").unwrap();
        assert_eq!((cursor.api_cursor, cursor.skip), (None, 2));
        let second = api_slice(
            "t",
            first.next_cursor.as_deref(),
            Some(5),
            async |_, limit| {
                assert_eq!(limit, 7);
                Ok(Page {
                    items: big(0..5),
                    next_cursor: None,
                })
            },
            |item| item,
        )
        .await
        .unwrap();
        assert!(second.items[0].starts_with('2'));
    }

    #[test]
    fn ranked_slices_page_by_offset() {
        let first = ranked_slice("r", (0..45).collect(), None, Some(20)).unwrap();
        assert_eq!(first.items.len(), 20);
        let second = ranked_slice(
            "r",
            (0..45).collect(),
            first.next_cursor.as_deref(),
            Some(20),
        )
        .unwrap();
        assert_eq!(second.items[0], 20);
        let third = ranked_slice(
            "r",
            (0..45).collect::<Vec<u32>>(),
            second.next_cursor.as_deref(),
            Some(20),
        )
        .unwrap();
        assert_eq!(third.items.len(), 5);
        assert!(third.next_cursor.is_none());
    }
}
