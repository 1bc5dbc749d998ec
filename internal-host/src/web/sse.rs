//! `GET /conversations/{id}/events`: the conversation's durable event log as server-sent events,
//! from after `Last-Event-ID` (or `?after=`), each with `id: <sequence>`, then live: readers are
//! woken by the log's in-process signal and poll as well. A reconnect resumes where the browser
//! left off, so nothing is lost. The stream ends when the session does.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::conversations::{self, Owner};
use crate::events::{EventLog, Signals, StoredEvent};
use crate::web::error::WebError;
use crate::web::extract::{Api, Ids};

/// Events are read from the log in batches of this many.
const BATCH: i64 = 200;

#[derive(Debug, Deserialize)]
pub(crate) struct After {
    after: Option<i64>,
}

struct Reader {
    log: EventLog,
    signals: Signals,
    conversation_id: Uuid,
    after: i64,
    ready: VecDeque<Event>,
}

/// `GET /conversations/{id}/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    Api(session): Api,
    Ids(conversation_id): Ids<Uuid>,
    headers: HeaderMap,
    query: Result<Query<After>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let conversation = conversations::find(
        state.database(),
        Owner::from(&session.user),
        conversation_id,
    )
    .await?
    .ok_or(WebError::NotFound)?;
    let from_query = match query {
        Ok(Query(After { after })) => after,
        Err(_) => {
            return Err(WebError::BadRequest(
                "`after` must be a sequence number.".into(),
            ));
        }
    };
    let from_header = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    WebError::BadRequest("Last-Event-ID must be a sequence number.".into())
                })?,
        ),
        None => None,
    };
    // The browser's own Last-Event-ID (set by a reconnect) wins over the page's `after`.
    let after = from_header.or(from_query).unwrap_or(0).max(0);
    let log = state.events().clone();
    // Subscribed before the first read, so nothing appended in between is missed.
    let signals = log.signals();
    let reader = Reader {
        log,
        signals,
        conversation_id: conversation.id,
        after,
        ready: VecDeque::new(),
    };
    let session_left = (session.expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let stream = stream::unfold(reader, next_event)
        .take_until(tokio::time::sleep(session_left))
        .map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn next_event(mut reader: Reader) -> Option<(Event, Reader)> {
    loop {
        if let Some(event) = reader.ready.pop_front() {
            return Some((event, reader));
        }
        match reader
            .log
            .read_after(reader.conversation_id, reader.after, BATCH)
            .await
        {
            Ok(batch) if batch.is_empty() => {
                reader
                    .log
                    .wait_for_more(reader.conversation_id, &mut reader.signals)
                    .await;
            }
            Ok(batch) => {
                for stored in batch {
                    reader.after = stored.sequence;
                    reader.ready.push_back(to_sse(&stored));
                }
            }
            Err(error) => {
                // The browser reconnects with Last-Event-ID and carries on from there.
                tracing::warn!(%error, "the event stream stopped on a read error");
                return None;
            }
        }
    }
}

fn to_sse(stored: &StoredEvent) -> Event {
    let data = serde_json::json!({
        "sequence": stored.sequence,
        "turn_id": stored.turn_id,
        "event": stored.event,
    });
    Event::default()
        .id(stored.sequence.to_string())
        .data(data.to_string())
}
