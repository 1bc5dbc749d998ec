//! Posting the report to the incident's timeline, exactly once per incident.
//!
//! The worker may confirm `annotate_incident` by itself (policy `self_confirm_annotations`; no
//! other privileged tool, ever). It does so while it holds the investigation's row lock, after
//! checking the timeline through internal-mcp for the note's marker line: a takeover cannot claim
//! the row meanwhile (claims skip locked rows), and an attempt that died after writing finds its
//! note on the timeline instead of writing a second one. Steps of this phase are recorded on the
//! locked transaction's own connection.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::AgentIdentity;
use super::playbook::{IncidentDetail, Recorder, RunError, parse};
use super::report::marker;
use super::store;
use crate::mcp::{McpConnector, McpSession, ToolOutcome};

/// Where the note stands after this phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoteOutcome {
    Posted,
    Found,
    AlreadyDone,
    Disabled,
}

/// The confirmation token of a two-step tool's first answer, from the result's `_meta` (see
/// [`ToolOutcome::confirmation`]).
pub fn confirmation_token(outcome: &ToolOutcome) -> Option<String> {
    outcome
        .confirmation()
        .map(|confirmation| confirmation.token)
}

/// Posts `note` unless the policy forbids it or it is already on the timeline.
pub(crate) async fn post(
    pool: &PgPool,
    recorder: &Recorder<'_>,
    connector: &McpConnector,
    reader_session: &McpSession,
    agent: AgentIdentity,
    note: &str,
    self_confirm: bool,
) -> Result<NoteOutcome, RunError> {
    let investigation = recorder.investigation;
    let mut transaction = pool.begin().await.map_err(crate::error::Error::from)?;
    let held: Option<(Option<String>, String)> = sqlx::query_as(
        "SELECT lease_owner, note_status FROM investigations WHERE id = $1 FOR UPDATE",
    )
    .bind(investigation.id)
    .fetch_optional(&mut *transaction)
    .await
    .map_err(crate::error::Error::from)?;
    let note_status = match held {
        Some((Some(owner), note_status)) if owner == recorder.worker_id => note_status,
        _ => return Err(RunError::LeaseLost),
    };
    if matches!(note_status.as_str(), "posted" | "found") {
        return Ok(NoteOutcome::AlreadyDone);
    }
    if !self_confirm {
        store::set_note_status(
            &mut transaction,
            investigation.id,
            recorder.worker_id,
            "disabled",
            None,
        )
        .await?;
        transaction
            .commit()
            .await
            .map_err(crate::error::Error::from)?;
        return Ok(NoteOutcome::Disabled);
    }
    store::set_note_status(
        &mut transaction,
        investigation.id,
        recorder.worker_id,
        "planned",
        None,
    )
    .await?;

    let incident = investigation.incident_id.to_string();
    let check = recorder
        .call_locked(
            &mut transaction,
            reader_session,
            "timeline_check",
            "get_incident",
            json!({"incident": incident}),
        )
        .await?;
    let detail: IncidentDetail = parse(&check).map_err(|message| {
        RunError::Retryable(format!("the timeline could not be read: {message}"))
    })?;
    let marker = marker(investigation.id);
    let existing = detail.timeline.iter().find(|entry| {
        entry.kind == "note"
            && entry.author_id == Some(agent.user_id)
            && entry.body.contains(&marker)
    });
    if let Some(existing) = existing {
        store::set_note_status(
            &mut transaction,
            investigation.id,
            recorder.worker_id,
            "found",
            Some(existing.id),
        )
        .await?;
        transaction
            .commit()
            .await
            .map_err(crate::error::Error::from)?;
        return Ok(NoteOutcome::Found);
    }

    let responder = connector
        .connect(&agent.acting("responder"), investigation.correlation_id)
        .await?;
    let result = plan_and_confirm(&mut transaction, recorder, &responder, &incident, note).await;
    responder.close().await;
    let event_id = result?;
    store::set_note_status(
        &mut transaction,
        investigation.id,
        recorder.worker_id,
        "posted",
        event_id,
    )
    .await?;
    transaction
        .commit()
        .await
        .map_err(crate::error::Error::from)?;
    Ok(NoteOutcome::Posted)
}

async fn plan_and_confirm(
    transaction: &mut sqlx::PgConnection,
    recorder: &Recorder<'_>,
    session: &McpSession,
    incident: &str,
    note: &str,
) -> Result<Option<Uuid>, RunError> {
    let plan = recorder
        .call_locked(
            transaction,
            session,
            "annotate_plan",
            "annotate_incident",
            json!({"incident": incident, "note": note}),
        )
        .await?;
    if plan.outcome.is_error {
        return Err(RunError::Retryable(format!(
            "annotate_incident refused the plan: {}",
            plan.outcome.text
        )));
    }
    let Some(token) = confirmation_token(&plan.outcome) else {
        return Err(RunError::Permanent(
            "annotate_incident answered without a confirmation token".into(),
        ));
    };
    let confirmed = recorder
        .call_locked(
            transaction,
            session,
            "annotate_confirm",
            "annotate_incident",
            json!({"incident": incident, "note": note, "confirmation_token": token}),
        )
        .await?;
    if confirmed.outcome.is_error {
        return Err(RunError::Retryable(format!(
            "annotate_incident refused the confirmation: {}",
            confirmed.outcome.text
        )));
    }
    Ok(confirmed
        .outcome
        .structured
        .as_ref()
        .and_then(|value| value["event"]["id"].as_str())
        .and_then(|id| Uuid::parse_str(id).ok()))
}
