//! Alerts derived from the generated samples: each monitor evaluated minute by minute over its
//! service's series, exactly as the alerting pipeline would have done. Some older alerts were
//! acknowledged by someone on call.

use chrono::TimeDelta;
use uuid::Uuid;

use super::plan::{AlertRow, OrganizationPlan, ServicePlan};
use super::random::{Random, identifier};
use super::signals::{ServiceSeries, Window};
use crate::domain::kinds::AlertState;

/// Alerts older than this may have been acknowledged; newer ones are still waiting for someone.
const HOURS_BEFORE_ACKNOWLEDGEMENT_IS_LIKELY: i64 = 6;
/// The share of older alerts (not part of an incident) someone acknowledged.
const ACKNOWLEDGED_SHARE: f64 = 0.35;

/// The alerts `service`'s monitors raised over `series`, in monitor order, oldest first.
pub(crate) fn derive(
    organization: &OrganizationPlan,
    service: &ServicePlan,
    series: &ServiceSeries,
    window: &Window,
    seed: u64,
) -> Vec<AlertRow> {
    let mut alerts = Vec::new();
    for monitor in &service.monitors {
        let rule = &monitor.rule;
        let labels = serde_json::json!({
            "service": service.name,
            "metric": rule.metric,
            "team": service.team,
        })
        .to_string();
        for firing in rule.evaluate(series.metric(rule.metric)) {
            let (state, resolved_at) = match firing.resolved {
                Some(resolved) => (AlertState::Resolved, Some(window.time_of(resolved))),
                None => (AlertState::Firing, None),
            };
            alerts.push(AlertRow {
                id: identifier(seed, &format!("alert/{}/{}", monitor.id, firing.started)),
                organization_id: organization.id,
                monitor_id: monitor.id,
                service_id: service.id,
                metric: rule.metric,
                state,
                severity: rule.severity,
                summary: rule.summary(&service.name),
                labels: labels.clone(),
                started_at: window.time_of(firing.started),
                resolved_at,
                acknowledged_at: None,
                acknowledged_by: None,
                incident_id: None,
            });
        }
    }
    alerts
}

/// Marks some of the older alerts that are not part of an incident as acknowledged, a few minutes
/// after they fired and before they resolved.
pub(crate) fn acknowledge_older_alerts(
    organization: &OrganizationPlan,
    alerts: &mut [AlertRow],
    window: &Window,
    seed: u64,
) {
    let responders: Vec<Uuid> = organization.responder_ids();
    let mut random = Random::derive(
        seed,
        &format!("alert-acknowledgements/{}", organization.blueprint.slug),
    );
    let older_than = window.end - TimeDelta::hours(HOURS_BEFORE_ACKNOWLEDGEMENT_IS_LIKELY);
    for alert in alerts.iter_mut() {
        // Draw for every alert, so one alert's fate does not depend on which others qualify.
        let acknowledged = random.chance(ACKNOWLEDGED_SHARE);
        let acknowledged_at = alert.started_at + TimeDelta::minutes(random.integer(1, 10));
        let acknowledged_by = *random.pick(&responders);
        let qualifies = alert.incident_id.is_none()
            && alert.acknowledged_at.is_none()
            && alert.started_at < older_than;
        let still_firing_then = alert
            .resolved_at
            .is_none_or(|resolved_at| acknowledged_at < resolved_at);
        if acknowledged && qualifies && still_firing_then {
            alert.acknowledged_at = Some(acknowledged_at);
            alert.acknowledged_by = Some(acknowledged_by);
        }
    }
}
