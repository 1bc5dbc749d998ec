//! The `deployments` toolset: recent releases of services, filtered and paged.

use rmcp::schemars::{self, JsonSchema};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use serde::{Deserialize, Serialize};
use tracing::instrument;

use super::alerts::enum_text;
use super::run::Parameters;
use super::{
    DeploymentItem, DeploymentStatus, Json, Readable, ToolCall, ToolFailure, hint_line, list_hint,
    service_and_since,
};
use crate::bounded;
use crate::error::Error;
use crate::server::ExternalServer;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDeploymentsArgs {
    /// Service name, e.g. checkout-api.
    pub service: Option<String>,
    pub status: Option<DeploymentStatus>,
    /// Started within this long (30m, 6h, 7d) or since an RFC 3339 time.
    pub since: Option<String>,
    /// Default 20.
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
    /// next_cursor of the previous call.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeploymentList {
    /// Newest first.
    pub deployments: Vec<DeploymentItem>,
    pub truncated: bool,
    pub next_cursor: Option<String>,
    pub hint: Option<String>,
}

#[tool_router(router = deployments_router, vis = "pub(crate)")]
impl ExternalServer {
    #[tool(
        title = "List deployments",
        description = "List deployments, newest first, filtered by service, status (in_progress/succeeded/failed/rolled_back) and start time. Use to check whether a release preceded a problem.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn list_deployments(
        &self,
        arguments: Parameters<ListDeploymentsArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<DeploymentList>, ToolFailure> {
        self.run(arguments, context, "list deployments", list).await
    }
}

#[instrument(skip_all, fields(tool = "list_deployments"))]
pub async fn list(call: &ToolCall, args: ListDeploymentsArgs) -> Result<DeploymentList, Error> {
    let filters = service_and_since(call, args.service.as_deref(), args.since.as_deref())
        .await?
        .with("status", args.status.map(|status| enum_text(&status)));
    let links = &call.links;
    let slice = bounded::api_slice(
        "list_deployments",
        args.cursor.as_deref(),
        args.limit,
        async |cursor, limit| {
            call.api
                .deployments(&filters.clone().page(limit, cursor.as_deref()))
                .await
        },
        |item| DeploymentItem::from_api(item, links),
    )
    .await?;
    let deployments = slice.items;
    let hint = if deployments.is_empty() {
        Some("No deployments match: widen `since` or drop the status filter.".to_owned())
    } else if slice.truncated {
        Some("Narrow with service, status or since to see fewer.".to_owned())
    } else {
        None
    };
    let hint = list_hint(slice.next_cursor.as_deref(), hint);
    Ok(DeploymentList {
        deployments,
        truncated: slice.truncated,
        next_cursor: slice.next_cursor,
        hint,
    })
}

impl Readable for DeploymentList {
    fn readable(&self) -> String {
        let mut text = format!("Deployments: {}", self.deployments.len());
        for deployment in &self.deployments {
            text.push('\n');
            text.push_str(&deployment.line());
        }
        text.push_str(&hint_line(self.hint.as_deref()));
        text
    }
}
