//! The Investigations pages: the organisation's AgenticOps investigations (status, duration, MCP
//! calls, the note's fate), one investigation with its report, the key metric's chart and every
//! recorded step, and the form that continues an investigation in a new chat. Any signed-in
//! member of the organisation may read them; another organisation's ids answer 404.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::agent::trace::chart_of;
use crate::app::AppState;
use crate::investigations::{
    self, CHART_STEP, Claim, InvestigationDetail, InvestigationSummary, RecordedStep, Report,
};
use crate::session::Session;
use crate::web::chart;
use crate::web::error::WebError;
use crate::web::extract::{Api, FormFields, Ids, Page, csrf_header};
use crate::web::pages::{Header, ListedConversation, html, listed, see_other};

/// The most investigations the list shows.
const LISTED_INVESTIGATIONS: i64 = 100;
/// A step's arguments or result is shown up to this many characters.
const MAX_SHOWN_CHARS: usize = 20_000;
/// What a chat continued from an investigation asks when the person adds nothing.
const DEFAULT_FOLLOW_UP: &str = "What should I check next?";

#[derive(Template)]
#[template(path = "investigations.html")]
struct ListPage {
    header: Header,
    conversations: Vec<ListedConversation>,
    investigations: Vec<Row>,
}

#[derive(Template)]
#[template(path = "investigation.html")]
struct DetailPage {
    header: Header,
    conversations: Vec<ListedConversation>,
    investigation: Row,
    attempts: i32,
    in_progress: bool,
    error: Option<String>,
    report: Option<ReportView>,
    chart: Option<String>,
    steps: Vec<StepView>,
    max_question_chars: usize,
}

/// One investigation as a row of the list or the head of its page.
struct Row {
    id: Uuid,
    reference: String,
    services: String,
    status: String,
    reason: Option<String>,
    duration: String,
    mcp_calls: i32,
    note_status: String,
    created_at: String,
}

struct ReportView {
    title: String,
    generated_by: String,
    cause: Option<CauseView>,
    sections: Vec<Section>,
    dropped_claims: usize,
    synthesis: Option<String>,
    note_outcome: Option<String>,
}

struct CauseView {
    summary: String,
    confidence: String,
    /// The one claim the cause rests on, as a list for the claims macro.
    claims: Vec<Claim>,
}

struct Section {
    title: &'static str,
    claims: Vec<Claim>,
}

struct StepView {
    id: i64,
    attempt: i32,
    name: String,
    tool: String,
    status: String,
    duration_ms: i32,
    summary: String,
    arguments: String,
    result: Option<String>,
}

/// `GET /investigations`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Page(session): Page,
) -> Result<Response, WebError> {
    let investigations = investigations::list_investigations(
        state.database(),
        session.user.organization_id,
        LISTED_INVESTIGATIONS,
    )
    .await?
    .iter()
    .map(Row::of)
    .collect();
    let page = ListPage {
        conversations: listed(&state, &session, None).await?,
        header: Header::of(&session),
        investigations,
    };
    html(page.render())
}

/// `GET /investigations/{id}` (the investigation's id or its incident's).
pub(crate) async fn detail(
    State(state): State<AppState>,
    Page(session): Page,
    Ids(id): Ids<Uuid>,
) -> Result<Response, WebError> {
    let detail = find(&state, &session, id).await?;
    let chart = detail
        .steps
        .iter()
        .rev()
        .filter(|step| step.name == CHART_STEP && step.status == "ok")
        .find_map(|step| {
            let mut drawn = chart_of("run_select", step.result.as_ref()?)?;
            drawn.title = key_metric_title(step);
            Some(chart::render(&drawn))
        });
    let page = DetailPage {
        conversations: listed(&state, &session, None).await?,
        header: Header::of(&session),
        investigation: Row::of(&detail.summary),
        attempts: detail.summary.attempts,
        in_progress: matches!(detail.summary.status.as_str(), "queued" | "running"),
        error: detail.error.clone(),
        report: detail.report.as_ref().and_then(ReportView::of),
        chart,
        steps: detail.steps.iter().map(StepView::of).collect(),
        max_question_chars: state.orchestrator().max_question_chars(),
    };
    html(page.render())
}

/// `POST /investigations/{id}/chat`: a new conversation whose first question carries the
/// investigation's report, then the person's question (or "what next").
pub(crate) async fn continue_in_chat(
    State(state): State<AppState>,
    Api(session): Api,
    Ids(id): Ids<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    form.check_csrf(&session, csrf_header(&headers))?;
    let detail = find(&state, &session, id).await?;
    let follow_up = form
        .get("question")
        .map(str::trim)
        .filter(|question| !question.is_empty())
        .unwrap_or(DEFAULT_FOLLOW_UP);
    let question = continuation(
        &detail,
        follow_up,
        state.orchestrator().max_question_chars(),
    )
    .ok_or_else(|| {
        WebError::Unprocessable(format!(
            "The question is too long: write at most {} characters.",
            state.orchestrator().max_question_chars() / 2
        ))
    })?;
    let session = crate::web::extract::recheck(&state, &session).await?;
    let (conversation_id, _turn_id) = state
        .orchestrator()
        .ask(&session.user, None, &question)
        .await?;
    Ok(see_other(&format!("/conversations/{conversation_id}")))
}

async fn find(
    state: &AppState,
    session: &Session,
    id: Uuid,
) -> Result<InvestigationDetail, WebError> {
    investigations::investigation(state.database(), session.user.organization_id, id)
        .await?
        .ok_or(WebError::NotFound)
}

/// The first question of a chat continued from `detail`: the report's claims as context (cut
/// to fit), then `follow_up`; `None` when `follow_up` alone takes more than half of `max_chars`.
fn continuation(detail: &InvestigationDetail, follow_up: &str, max_chars: usize) -> Option<String> {
    if follow_up.chars().count() > max_chars / 2 {
        return None;
    }
    let summary = &detail.summary;
    let mut context = format!(
        "Continue from the automatic investigation {} of incident {} (status {}).",
        summary.id, summary.incident_reference, summary.status
    );
    if let Some(report) = detail.report.as_ref().and_then(ReportView::of) {
        if let Some(cause) = &report.cause {
            context.push_str(&format!(
                "\nSuspected cause ({} confidence): {}",
                cause.confidence, cause.summary
            ));
        }
        for section in &report.sections {
            for claim in &section.claims {
                context.push_str(&format!("\n- {}: {}", section.title, claim.text));
            }
        }
    }
    let tail = format!("\n\nCheck what you need with the tools. {follow_up}");
    let room = max_chars.saturating_sub(tail.chars().count());
    if context.chars().count() > room {
        context = context.chars().take(room.saturating_sub(1)).collect();
        context.push('…');
    }
    Some(format!("{context}{tail}"))
}

fn key_metric_title(step: &RecordedStep) -> String {
    step.arguments
        .get("sql")
        .and_then(Value::as_str)
        .and_then(|sql| {
            let service = sql.split("v.name = '").nth(1)?.split('\'').next()?;
            let metric = sql.split("m.name = '").nth(1)?.split('\'').next()?;
            Some(format!("{metric} of {service}, 5-minute averages"))
        })
        .unwrap_or_else(|| "The key metric around the incident".to_owned())
}

impl Row {
    fn of(summary: &InvestigationSummary) -> Self {
        Self {
            id: summary.id,
            reference: summary.incident_reference.clone(),
            services: summary.services.join(", "),
            status: summary.status.clone(),
            reason: summary.status_reason.clone(),
            duration: duration_text(summary.started_at, summary.finished_at),
            mcp_calls: summary.mcp_calls,
            note_status: summary.note_status.clone(),
            created_at: summary
                .created_at
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
        }
    }
}

fn duration_text(started: Option<DateTime<Utc>>, finished: Option<DateTime<Utc>>) -> String {
    match (started, finished) {
        (Some(started), Some(finished)) => seconds((finished - started).num_milliseconds()),
        (Some(started), None) => format!(
            "running for {}",
            seconds((Utc::now() - started).num_milliseconds())
        ),
        _ => "not started".to_owned(),
    }
}

fn seconds(milliseconds: i64) -> String {
    format!("{:.1} s", milliseconds.max(0) as f64 / 1000.0)
}

impl ReportView {
    /// The stored report (a `Report` plus the note's outcome), or `None` if it is not one.
    fn of(stored: &Value) -> Option<Self> {
        let report: Report = serde_json::from_value(stored.clone()).ok()?;
        let cause = report.suspected_cause.map(|cause| CauseView {
            summary: format!(
                "{} {} (deployment {}, {}, started {})",
                cause.service,
                cause.version,
                cause.deployment_id,
                cause.deployment_status,
                cause.started_at.format("%Y-%m-%d %H:%M UTC")
            ),
            confidence: cause.confidence,
            claims: vec![cause.claim],
        });
        Some(Self {
            title: report.title,
            generated_by: report.generated_by,
            cause,
            sections: vec![
                Section {
                    title: "What is going on",
                    claims: report.what_is_going_on,
                },
                Section {
                    title: "Evidence",
                    claims: report.evidence,
                },
                Section {
                    title: "Ruled out",
                    claims: report.ruled_out,
                },
                Section {
                    title: "Next steps",
                    claims: report.next_steps,
                },
            ],
            dropped_claims: report.dropped_claims,
            synthesis: report.synthesis,
            note_outcome: stored["note"]["outcome"].as_str().map(str::to_owned),
        })
    }
}

impl StepView {
    fn of(step: &RecordedStep) -> Self {
        Self {
            id: step.id,
            attempt: step.attempt,
            name: step.name.clone(),
            tool: step.tool.clone(),
            status: step.status.replace('_', "-"),
            duration_ms: step.duration_ms,
            summary: step.summary.clone(),
            arguments: shown(&step.arguments),
            result: step.result.as_ref().map(shown),
        }
    }
}

/// Pretty JSON, cut at [`MAX_SHOWN_CHARS`].
fn shown(value: &Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    if text.chars().count() <= MAX_SHOWN_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_SHOWN_CHARS).collect();
    cut.push_str("\n… (cut for the page)");
    cut
}
