//! Argument completion: service names for the service resource template, team names and
//! incident references for the prompts, so a user picking a prompt or resource in their host
//! gets suggestions as they type.

use rmcp::model::{CompleteRequestParams, CompleteResult, CompletionInfo, Reference};

use crate::api::ListQuery;
use crate::prompts::{self, TRIAGE_INCIDENT, WEEKLY_HEALTH_REPORT};
use crate::resources::{INCIDENT_TEMPLATE, SERVICE_TEMPLATE};
use crate::tools::ToolCall;

/// Suggestions for one argument; nothing (never an error) when the argument is unknown or the
/// API cannot be asked.
pub async fn complete(call: &ToolCall, request: &CompleteRequestParams) -> CompleteResult {
    let typed = request.argument.value.trim().to_lowercase();
    let candidates = match (&request.r#ref, request.argument.name.as_str()) {
        (Reference::Resource(reference), "name") if reference.uri == SERVICE_TEMPLATE => {
            service_names(call, &typed).await
        }
        (Reference::Resource(reference), "reference") if reference.uri == INCIDENT_TEMPLATE => {
            open_incidents(call).await
        }
        (Reference::Prompt(prompt), "incident") if prompt.name == TRIAGE_INCIDENT => {
            open_incidents(call).await
        }
        (Reference::Prompt(prompt), "team") if prompt.name == WEEKLY_HEALTH_REPORT => {
            prompts::team_names(call).await.unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let mut values: Vec<String> = candidates
        .into_iter()
        .filter(|candidate| candidate.to_lowercase().contains(&typed))
        .collect();
    // Names starting with what was typed come first.
    values.sort_by_key(|value| !value.to_lowercase().starts_with(&typed));
    let total = values.len();
    values.truncate(CompletionInfo::MAX_VALUES);
    let mut info = CompletionInfo::new(values).unwrap_or_default();
    info.total = u32::try_from(total).ok();
    info.has_more = Some(total > CompletionInfo::MAX_VALUES);
    CompleteResult::new(info)
}

async fn service_names(call: &ToolCall, typed: &str) -> Vec<String> {
    let query = ListQuery::new()
        .with("q", Some(typed).filter(|typed| !typed.is_empty()))
        .page(200, None);
    match call.api.services(&query).await {
        Ok(page) => page.items.into_iter().map(|service| service.name).collect(),
        Err(_) => Vec::new(),
    }
}

async fn open_incidents(call: &ToolCall) -> Vec<String> {
    let mut references = Vec::new();
    for status in ["open", "acknowledged"] {
        if let Ok(page) = call
            .api
            .incidents(
                &ListQuery::new()
                    .with("status", Some(status))
                    .page(100, None),
            )
            .await
        {
            references.extend(page.items.into_iter().map(|incident| incident.reference));
        }
    }
    references
}
