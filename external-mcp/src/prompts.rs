//! Prompts: ready-made requests a user picks in their host ("triage this incident", "weekly health
//! report for a team"). Each is filled with current facts, so the model starts from data and
//! knows which tools to use next.

use rmcp::ErrorData as McpError;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResult, Prompt, PromptArgument, PromptMessage, Role,
};

use crate::api::ListQuery;
use crate::resources::protocol_error;
use crate::tools::services::{self, FindServicesArgs};
use crate::tools::{Readable, ToolCall, incidents};

pub const TRIAGE_INCIDENT: &str = "triage_incident";
pub const WEEKLY_HEALTH_REPORT: &str = "weekly_health_report";

pub fn listed() -> Vec<Prompt> {
    vec![
        Prompt::new(
            TRIAGE_INCIDENT,
            Some("Triage an incident: what is affected, what changed, what to do next."),
            Some(vec![
                PromptArgument::new("incident")
                    .with_description("INC-42 or the incident's id")
                    .with_required(true),
            ]),
        )
        .with_title("Triage this incident"),
        Prompt::new(
            WEEKLY_HEALTH_REPORT,
            Some("A weekly health report for one team's services: incidents, alerts, deployments, trends."),
            Some(vec![
                PromptArgument::new("team")
                    .with_description("The team, e.g. checkout")
                    .with_required(true),
            ]),
        )
        .with_title("Weekly health report for a team"),
    ]
}

pub async fn get(
    call: &ToolCall,
    request: GetPromptRequestParams,
) -> Result<GetPromptResult, McpError> {
    let argument = |name: &str| {
        request
            .arguments
            .as_ref()
            .and_then(|arguments| arguments.get(name))
            .and_then(|value| value.as_str())
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                McpError::invalid_params(
                    format!("the prompt {} needs the argument `{name}`", request.name),
                    None,
                )
            })
    };
    match request.name.as_str() {
        TRIAGE_INCIDENT => triage(call, &argument("incident")?).await,
        WEEKLY_HEALTH_REPORT => weekly_report(call, &argument("team")?).await,
        other => Err(McpError::invalid_params(
            format!("no prompt named {other}"),
            None,
        )),
    }
}

async fn triage(call: &ToolCall, reference: &str) -> Result<GetPromptResult, McpError> {
    let view = incidents::view(call, reference)
        .await
        .map_err(|error| protocol_error(&error))?;
    let services = view.incident.services.join(", ");
    let text = format!(
        "Triage incident {reference} for me. Here is what the monitoring system has now:\n\n{facts}\n\n\
         Then:\n\
         1. For each affected service ({services}), call service_overview, and metric_summary for error_rate and \
         latency_p95_ms over a window that starts before the incident opened.\n\
         2. Call list_deployments for those services since a few hours before the incident: did a release \
         precede it?\n\
         3. Tell me: impact (who and what is affected, since when), the most likely cause with the evidence, \
         and the next steps. Link the incident and services with their web_url.\n\
         Do not change the incident (acknowledge, resolve, notes) unless I ask.",
        facts = view.readable(),
    );
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]).with_description(
            format!(
                "Triage {}: {}",
                view.incident.reference, view.incident.title
            ),
        ),
    )
}

async fn weekly_report(call: &ToolCall, team: &str) -> Result<GetPromptResult, McpError> {
    let list = services::find(
        call,
        FindServicesArgs {
            team: Some(team.to_owned()),
            limit: Some(crate::bounded::MAX_ITEMS),
            ..FindServicesArgs::default()
        },
    )
    .await
    .map_err(|error| protocol_error(&error))?;
    if list.services.is_empty() {
        let teams = team_names(call).await.unwrap_or_default();
        return Err(McpError::invalid_params(
            format!(
                "no services belong to team `{team}`; teams: {}",
                teams.join(", ")
            ),
            None,
        ));
    }
    let names: Vec<&str> = list
        .services
        .iter()
        .map(|service| service.name.as_str())
        .collect();
    let text = format!(
        "Write a weekly health report for the {team} team. Its services now:\n\n{facts}\n\n\
         For the last 7 days, use list_incidents (since=7d) and list_deployments (since=7d) for each of: {names}; \
         and metric_summary (window=7d) for error_rate and latency_p95_ms of the tier_1 services. \
         Report: overall health, incidents (with references and durations), notable deployments and rollbacks, \
         metric trends, and up to three recommendations. Keep it under a page, link items with their web_url.",
        facts = list.readable(),
        names = names.join(", "),
    );
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(format!("Weekly health report for team {team}")),
    )
}

/// The organisation's team names, from the catalog (first 200 services).
pub async fn team_names(call: &ToolCall) -> Result<Vec<String>, crate::error::Error> {
    let page = call.api.services(&ListQuery::new().page(200, None)).await?;
    let mut teams: Vec<String> = page.items.into_iter().map(|service| service.team).collect();
    teams.sort();
    teams.dedup();
    Ok(teams)
}
