//! Learning of new incidents through internal-mcp's `list_incidents_opened_since`, never the
//! product's tables: each poll reads from the organisation's cursor (minus an overlap), page by
//! page, enqueues one investigation per incident (`ON CONFLICT DO NOTHING`, so replicas and
//! overlapping polls add each incident once) and moves the cursor on.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::store::{self, DiscoveredIncident};
use super::{AgentIdentity, InvestigationConfig};
use crate::error::Error;
use crate::mcp::McpConnector;

/// Pages of one poll at most (100 incidents each); the rest waits for the next poll.
const MAX_PAGES: usize = 20;

#[derive(Debug, Deserialize)]
struct Page {
    incidents: Vec<Listed>,
    next: Option<Cursor>,
}

#[derive(Debug, Deserialize)]
struct Listed {
    id: Uuid,
    reference: String,
    opened_at: DateTime<Utc>,
    #[serde(default)]
    services: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Cursor {
    since: DateTime<Utc>,
    after_id: Uuid,
}

/// One poll for `agent`'s organisation; returns how many investigations it added.
pub(crate) async fn poll(
    pool: &PgPool,
    connector: &McpConnector,
    agent: AgentIdentity,
    config: &InvestigationConfig,
) -> Result<usize, Error> {
    let initial = config.discover_since.unwrap_or_else(|| {
        Utc::now()
            - chrono::Duration::from_std(config.first_discovery_lookback)
                .unwrap_or(chrono::Duration::minutes(15))
    });
    let cursor = store::cursor(pool, agent.organization_id, initial).await?;
    let overlap =
        chrono::Duration::from_std(config.discovery_overlap).unwrap_or(chrono::Duration::zero());
    let session = connector
        .connect(&agent.acting("viewer"), Uuid::new_v4())
        .await?;
    let result = read_pages(pool, &session, agent, cursor - overlap, config).await;
    session.close().await;
    let (added, newest) = result?;
    if let Some(newest) = newest {
        store::advance_cursor(pool, agent.organization_id, newest).await?;
    }
    Ok(added)
}

async fn read_pages(
    pool: &PgPool,
    session: &crate::mcp::McpSession,
    agent: AgentIdentity,
    since: DateTime<Utc>,
    config: &InvestigationConfig,
) -> Result<(usize, Option<DateTime<Utc>>), Error> {
    let mut arguments = json!({"since": since.to_rfc3339(), "limit": 100});
    let mut added = 0;
    let mut newest: Option<DateTime<Utc>> = None;
    for _ in 0..MAX_PAGES {
        let map: Map<String, Value> = arguments.as_object().cloned().unwrap_or_default();
        let outcome = session.call("list_incidents_opened_since", map).await?;
        if outcome.is_error {
            return Err(Error::McpTransport {
                server: session.server().to_owned(),
                message: format!("list_incidents_opened_since refused: {}", outcome.text),
            });
        }
        let value = match outcome.structured {
            Some(value) => value,
            None => serde_json::from_str(&outcome.text).map_err(|error| {
                Error::Internal(format!("the incident list is not JSON: {error}"))
            })?,
        };
        let page: Page = serde_json::from_value(value)
            .map_err(|error| Error::Internal(format!("unexpected incident list: {error}")))?;
        for incident in &page.incidents {
            let discovered = DiscoveredIncident {
                id: incident.id,
                reference: incident.reference.clone(),
                opened_at: incident.opened_at,
                services: incident.services.clone(),
            };
            if store::enqueue(
                pool,
                agent.organization_id,
                &discovered,
                config.max_attempts,
            )
            .await?
            {
                added += 1;
                tracing::info!(incident = %incident.reference, organization = %agent.organization_id, "investigation queued");
            }
            newest = newest.max(Some(incident.opened_at));
        }
        match page.next {
            Some(next) => {
                arguments = json!({"since": next.since.to_rfc3339(), "after_id": next.after_id.to_string(), "limit": 100});
            }
            None => break,
        }
    }
    Ok((added, newest))
}
