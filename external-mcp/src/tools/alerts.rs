//! The `alerts` toolset: alerts raised by monitors, filtered and paged.

use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::run::Parameters;
use super::{
    AlertItem, AlertState, Json, Readable, Severity, ToolCall, ToolFailure, hint_line, list_hint,
    service_and_since,
};
use crate::bounded;
use crate::error::Error;
use crate::server::ExternalServer;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAlertsArgs {
    /// Service name, e.g. checkout-api.
    pub service: Option<String>,
    pub state: Option<AlertState>,
    pub severity: Option<Severity>,
    /// Started within this long (30m, 6h, 7d) or since an RFC 3339 time.
    pub since: Option<String>,
    /// Default 20.
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
    /// next_cursor of the previous call.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AlertList {
    /// Newest first.
    pub alerts: Vec<AlertItem>,
    pub truncated: bool,
    pub next_cursor: Option<String>,
    pub hint: Option<String>,
}

#[tool_router(router = alerts_router, vis = "pub(crate)")]
impl ExternalServer {
    #[tool(
        title = "List alerts",
        description = "List alerts raised by monitors, newest first, filtered by service, state (firing/resolved), severity and start time. Use state=firing for what is alerting now.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn list_alerts(
        &self,
        arguments: Parameters<ListAlertsArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<AlertList>, ToolFailure> {
        self.run(arguments, context, "list alerts", list).await
    }
}

#[instrument(skip_all, fields(tool = "list_alerts"))]
pub async fn list(call: &ToolCall, args: ListAlertsArgs) -> Result<AlertList, Error> {
    let filters = service_and_since(call, args.service.as_deref(), args.since.as_deref())
        .await?
        .with("state", args.state.map(|state| enum_text(&state)))
        .with(
            "severity",
            args.severity.map(|severity| enum_text(&severity)),
        );
    let links = &call.links;
    let slice = bounded::api_slice(
        "list_alerts",
        args.cursor.as_deref(),
        args.limit,
        async |cursor, limit| {
            call.api
                .alerts(&filters.clone().page(limit, cursor.as_deref()))
                .await
        },
        |item| AlertItem::from_api(item, links),
    )
    .await?;
    let alerts = slice.items;
    let hint = if alerts.is_empty() {
        Some("No alerts match: widen `since`, or drop the state or severity filter.".to_owned())
    } else if slice.truncated {
        Some("Narrow with service, state, severity or since to see fewer.".to_owned())
    } else {
        None
    };
    let hint = list_hint(slice.next_cursor.as_deref(), hint);
    Ok(AlertList {
        alerts,
        truncated: slice.truncated,
        next_cursor: slice.next_cursor,
        hint,
    })
}

/// The snake_case name serde gives a unit variant.
pub fn enum_text(value: &impl Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Readable for AlertList {
    fn readable(&self) -> String {
        let mut text = format!("Alerts: {}", self.alerts.len());
        for alert in &self.alerts {
            text.push('\n');
            text.push_str(&alert.line());
        }
        text.push_str(&hint_line(self.hint.as_deref()));
        text
    }
}
