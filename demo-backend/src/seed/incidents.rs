//! Incidents opened for the planted anomalies: each one starts from the alert its anomaly raised,
//! links it, and carries the timeline people left behind (opened, alert linked, acknowledged,
//! notes, resolved), consistent with the schema's lifecycle checks.

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};

use super::plan::{AlertRow, IncidentEventRow, IncidentRow, OrganizationPlan};
use super::random::identifier;
use super::signals::Window;
use super::stories::{MINUTES_TO_ACKNOWLEDGE, MINUTES_TO_OPEN, NoteTime, Outcome, PlannedIncident};
use crate::domain::kinds::IncidentStatus;

/// An organisation's incidents with their timelines.
#[derive(Debug, Default)]
pub(crate) struct Incidents {
    /// Numbered 1, 2, ... in the order they were opened.
    pub incidents: Vec<IncidentRow>,
    pub events: Vec<IncidentEventRow>,
}

/// Opens the organisation's planted incidents from its derived `alerts`, linking (and, where the
/// incident was acknowledged, acknowledging) the alerts each anomaly raised.
pub(crate) fn open_planted_incidents(
    organization: &OrganizationPlan,
    alerts: &mut [AlertRow],
    window: &Window,
    seed: u64,
) -> anyhow::Result<Incidents> {
    let mut opened = Incidents::default();
    for planned in &organization.planned_incidents {
        open_one(organization, planned, alerts, window, seed, &mut opened).with_context(|| {
            format!(
                "plant the incident \"{}\" in {}",
                planned.title, organization.blueprint.slug
            )
        })?;
    }
    opened
        .incidents
        .sort_by_key(|incident| (incident.opened_at, incident.id));
    for (incident, number) in opened.incidents.iter_mut().zip(1..) {
        incident.number = number;
    }
    opened
        .events
        .sort_by_key(|event| (event.incident_id, event.at));
    Ok(opened)
}

fn open_one(
    organization: &OrganizationPlan,
    planned: &PlannedIncident,
    alerts: &mut [AlertRow],
    window: &Window,
    seed: u64,
    opened: &mut Incidents,
) -> anyhow::Result<()> {
    let service = organization.service(planned.service);
    let anomaly_start = window.time_of(planned.anomaly.start);
    let anomaly_end = window.time_of(planned.anomaly.end);
    let mut linked: Vec<usize> = alerts
        .iter()
        .enumerate()
        .filter(|(_, alert)| {
            alert.service_id == service.id
                && (anomaly_start..anomaly_end).contains(&alert.started_at)
        })
        .map(|(position, _)| position)
        .collect();
    linked.sort_by_key(|&position| (alerts[position].started_at, alerts[position].id));
    let Some(&first) = linked
        .iter()
        .find(|&&position| alerts[position].metric == planned.metric)
    else {
        bail!(
            "the planted anomaly on {} raised no {} alert; the signals and the monitors disagree",
            planned.service,
            planned.metric
        );
    };
    // The alert that made someone open the incident goes first on the timeline.
    linked.retain(|&position| position != first);
    linked.insert(0, first);

    let incident_id = identifier(
        seed,
        &format!(
            "incident/{}/{}",
            organization.blueprint.slug, planned.service
        ),
    );
    let responder = organization.user(planned.responder);
    let opened_at = alerts[first].started_at + TimeDelta::minutes(MINUTES_TO_OPEN);
    let acknowledged_at = match planned.outcome {
        Outcome::Open => None,
        Outcome::Acknowledged | Outcome::Resolved { .. } => {
            Some(opened_at + TimeDelta::minutes(MINUTES_TO_ACKNOWLEDGE))
        }
    };
    let (status, resolved_at) = match &planned.outcome {
        Outcome::Open => (IncidentStatus::Open, None),
        Outcome::Acknowledged => (IncidentStatus::Acknowledged, None),
        Outcome::Resolved {
            minutes_after_anomaly,
            ..
        } => (
            IncidentStatus::Resolved,
            Some(anomaly_end + TimeDelta::minutes(*minutes_after_anomaly)),
        ),
    };

    let mut timeline: Vec<(DateTime<Utc>, &'static str, String)> = Vec::new();
    timeline.push((
        opened_at,
        "opened",
        format!("Opened from alert: {}", alerts[first].summary),
    ));
    for &position in &linked {
        let alert = &mut alerts[position];
        let linked_at = alert.started_at.max(opened_at) + TimeDelta::minutes(1);
        timeline.push((
            linked_at,
            "alert_linked",
            format!("Linked alert: {}", alert.summary),
        ));
        alert.incident_id = Some(incident_id);
        let Some(acknowledged_at) = acknowledged_at else {
            continue;
        };
        // People acknowledge the alerts of an incident they work on: those firing when they
        // acknowledged it, and those linked later as they come in.
        let acknowledged_alert_at = acknowledged_at.max(linked_at);
        if alert
            .resolved_at
            .is_none_or(|alert_resolved_at| acknowledged_alert_at < alert_resolved_at)
        {
            alert.acknowledged_at = Some(acknowledged_alert_at);
            alert.acknowledged_by = Some(responder.id);
        }
    }
    if let Some(acknowledged_at) = acknowledged_at {
        timeline.push((
            acknowledged_at,
            "acknowledged",
            format!("{} is investigating", responder.name),
        ));
    }
    for note in &planned.notes {
        let at = match note.at {
            NoteTime::AfterOpening { minutes } => opened_at + TimeDelta::minutes(minutes),
            NoteTime::AfterAcknowledgement { minutes } => {
                acknowledged_at.context("a note follows an acknowledgement that never happened")?
                    + TimeDelta::minutes(minutes)
            }
            NoteTime::At(at) => at,
        };
        timeline.push((at, "note", note.body.clone()));
    }
    if let (Outcome::Resolved { resolution, .. }, Some(resolved_at)) =
        (&planned.outcome, resolved_at)
    {
        timeline.push((resolved_at, "resolved", resolution.clone()));
    }
    timeline.sort_by_key(|(at, _, _)| *at);

    let last_at = timeline.last().map(|(at, _, _)| *at).unwrap_or(opened_at);
    if last_at > window.end {
        bail!(
            "the timeline runs past the end of the data ({last_at} > {})",
            window.end
        );
    }
    if let Some(&(at, kind, _)) = timeline.iter().find(|(at, _, _)| *at < opened_at) {
        bail!("a {kind} event at {at} comes before the incident opened at {opened_at}");
    }

    for (position, (at, kind, body)) in timeline.into_iter().enumerate() {
        opened.events.push(IncidentEventRow {
            id: identifier(seed, &format!("incident-event/{incident_id}/{position}")),
            organization_id: organization.id,
            incident_id,
            at,
            kind,
            author_id: Some(responder.id),
            body,
        });
    }
    opened.incidents.push(IncidentRow {
        id: incident_id,
        organization_id: organization.id,
        number: 0,
        title: planned.title.to_owned(),
        summary: planned.summary.clone(),
        severity: planned.severity,
        status,
        commander_id: Some(responder.id),
        created_by: responder.id,
        opened_at,
        acknowledged_at,
        resolved_at,
        service_id: service.id,
    });
    Ok(())
}
