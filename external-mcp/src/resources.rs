//! Resources: the service catalog and open incidents as documents a host can attach to a
//! conversation, and one service or incident by URI template.
//!
//! | URI | what |
//! |---|---|
//! | `demo://services` | every service with its health (JSON) |
//! | `demo://incidents/open` | open and acknowledged incidents (JSON) |
//! | `demo://services/{name}` | one service's overview, as `service_overview` returns it |
//! | `demo://incidents/{reference}` | one incident with its timeline, as `get_incident` returns it |

use rmcp::ErrorData as McpError;
use rmcp::model::{ReadResourceResult, Resource, ResourceContents, ResourceTemplate};
use serde::Serialize;

use crate::api::ListQuery;
use crate::bounded::within_bytes;
use crate::error::Error;
use crate::tools::services::{self, FindServicesArgs};
use crate::tools::{IncidentItem, ToolCall, incidents};

pub const CATALOG_URI: &str = "demo://services";
pub const OPEN_INCIDENTS_URI: &str = "demo://incidents/open";
pub const SERVICE_TEMPLATE: &str = "demo://services/{name}";
pub const INCIDENT_TEMPLATE: &str = "demo://incidents/{reference}";

/// The most bytes of items one resource document carries.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// A list document: its items, and whether some were left out.
#[derive(Debug, Serialize)]
struct Document<T> {
    items: Vec<T>,
    truncated: bool,
}

pub fn listed() -> Vec<Resource> {
    vec![
        Resource::new(CATALOG_URI, "service-catalog")
            .with_title("Service catalog")
            .with_description("Every service with its team, tier and health now.")
            .with_mime_type("application/json"),
        Resource::new(OPEN_INCIDENTS_URI, "open-incidents")
            .with_title("Open incidents")
            .with_description("Incidents not yet resolved, newest first.")
            .with_mime_type("application/json"),
    ]
}

pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new(SERVICE_TEMPLATE, "service")
            .with_title("Service overview")
            .with_description("One service: health, metrics, alerts, incidents, deployments. {name} e.g. checkout-api.")
            .with_mime_type("application/json"),
        ResourceTemplate::new(INCIDENT_TEMPLATE, "incident")
            .with_title("Incident")
            .with_description("One incident with its timeline. {reference} e.g. INC-42.")
            .with_mime_type("application/json"),
    ]
}

/// Reads the resource at `uri`.
pub async fn read(call: &ToolCall, uri: &str) -> Result<ReadResourceResult, McpError> {
    let json = match uri {
        CATALOG_URI => to_json(
            &catalog(call)
                .await
                .map_err(|error| protocol_error(&error))?,
        ),
        OPEN_INCIDENTS_URI => to_json(
            &open_incidents(call)
                .await
                .map_err(|error| protocol_error(&error))?,
        ),
        _ => {
            if let Some(name) = uri
                .strip_prefix("demo://services/")
                .filter(|rest| !rest.is_empty())
            {
                let name = percent_decoded(name);
                to_json(
                    &services::overview(call, &name)
                        .await
                        .map_err(|error| protocol_error(&error))?,
                )
            } else if let Some(reference) = uri
                .strip_prefix("demo://incidents/")
                .filter(|rest| !rest.is_empty())
            {
                let reference = percent_decoded(reference);
                to_json(
                    &incidents::view(call, &reference)
                        .await
                        .map_err(|error| protocol_error(&error))?,
                )
            } else {
                return Err(McpError::resource_not_found(
                    format!("no resource {uri}; see resources/list and resources/templates/list"),
                    None,
                ));
            }
        }
    }?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(json, uri).with_mime_type("application/json"),
    ]))
}

/// A failure while serving a resource or prompt: a JSON-RPC error carrying the actionable text.
pub fn protocol_error(error: &Error) -> McpError {
    let message = error.for_tool("read it");
    match error {
        Error::NotFound { .. } => McpError::resource_not_found(message, None),
        Error::InvalidInput(_) | Error::Refused { .. } => McpError::invalid_params(message, None),
        _ => McpError::internal_error(message, None),
    }
}

async fn catalog(call: &ToolCall) -> Result<Document<services::ServiceSummary>, Error> {
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let list = services::find(
            call,
            FindServicesArgs {
                limit: Some(crate::bounded::MAX_ITEMS),
                cursor,
                ..FindServicesArgs::default()
            },
        )
        .await?;
        items.extend(list.services);
        match list.next_cursor {
            Some(next) if items.len() < 1_000 => cursor = Some(next),
            _ => break,
        }
    }
    let total = items.len();
    let items = within_bytes(items, MAX_DOCUMENT_BYTES);
    Ok(Document {
        truncated: items.len() < total,
        items,
    })
}

async fn open_incidents(call: &ToolCall) -> Result<Document<IncidentItem>, Error> {
    let query = |status: &'static str| {
        ListQuery::new()
            .with("status", Some(status))
            .page(100, None)
    };
    let (opened, acknowledged) = (query("open"), query("acknowledged"));
    let (open, acknowledged) = tokio::try_join!(
        call.api.incidents(&opened),
        call.api.incidents(&acknowledged)
    )?;
    let more = open.next_cursor.is_some() || acknowledged.next_cursor.is_some();
    let mut items: Vec<IncidentItem> = open
        .items
        .into_iter()
        .chain(acknowledged.items)
        .map(|incident| IncidentItem::from_api(incident, &call.links))
        .collect();
    items.sort_by_key(|incident| std::cmp::Reverse(incident.opened_at));
    let total = items.len();
    let items = within_bytes(items, MAX_DOCUMENT_BYTES);
    Ok(Document {
        truncated: more || items.len() < total,
        items,
    })
}

fn to_json(value: &impl Serialize) -> Result<String, McpError> {
    serde_json::to_string_pretty(value).map_err(|error| {
        McpError::internal_error(format!("cannot serialize the resource: {error}"), None)
    })
}

/// `%20` and friends in a URI segment, decoded (names never need it, but hosts may encode).
fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| segment.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_segments_are_decoded() {
        assert_eq!(percent_decoded("checkout-api"), "checkout-api");
        assert_eq!(percent_decoded("INC-4"), "INC-4");
        assert_eq!(percent_decoded("a%20b"), "a b");
        assert_eq!(percent_decoded("100%"), "100%");
    }
}
