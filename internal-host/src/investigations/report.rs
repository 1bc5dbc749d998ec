//! The deterministic report of an investigation, from the playbook's findings alone.
//!
//! Every statement is a [`Claim`] citing the recorded steps it rests on; [`ReportBuilder`] drops,
//! by code, a claim that cites nothing or cites a step the run did not record, and counts what it
//! dropped. The suspected cause is the top-ranked deployment when the evidence supports it, with a
//! confidence decided by explicit rules (see [`confidence`]).

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::playbook::{AnomalyWindow, Findings, Suspect};

/// A deployment whose impact z-score (the larger of error rate and p95 latency) reaches this is
/// a candidate cause at all.
pub const MINIMUM_IMPACT_Z: f64 = 3.0;
/// ... and reaching this, a strong one.
pub const STRONG_IMPACT_Z: f64 = 6.0;
/// A metric change that starts within this many minutes after a deploy follows it.
pub const FOLLOWS_WITHIN_MINUTES: i64 = 60;

/// The report kept with the investigation and posted to the incident's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub incident: String,
    pub title: String,
    /// `playbook`, or `playbook + <model>` once the model's cited claims are in.
    pub generated_by: String,
    pub what_is_going_on: Vec<Claim>,
    pub suspected_cause: Option<SuspectedCause>,
    /// The anomaly windows of the incident's services around its opening, strongest first.
    pub anomaly_windows: Vec<WindowSummary>,
    pub evidence: Vec<Claim>,
    pub ruled_out: Vec<Claim>,
    pub next_steps: Vec<Claim>,
    /// Claims dropped because they cited no recorded step.
    pub dropped_claims: usize,
    /// What the model added, or why it added nothing; `None` without a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthesis: Option<String>,
}

/// A statement and the ids of the recorded steps it rests on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub text: String,
    pub cites: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SuspectedCause {
    pub service: String,
    pub version: String,
    pub deployment_id: Uuid,
    pub deployment_status: String,
    pub started_at: DateTime<Utc>,
    /// `low`, `medium` or `high`.
    pub confidence: String,
    pub claim: Claim,
    /// Which of the rules held, for people to check.
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowSummary {
    pub service: String,
    pub metric: String,
    pub direction: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub peak_z: f64,
    pub step: i64,
}

/// Collects claims, keeping only those that cite recorded steps.
#[derive(Debug)]
pub struct ReportBuilder {
    known_steps: HashSet<i64>,
    dropped: usize,
}

impl ReportBuilder {
    pub fn new(known_steps: impl IntoIterator<Item = i64>) -> Self {
        Self {
            known_steps: known_steps.into_iter().collect(),
            dropped: 0,
        }
    }

    /// The claim, or `None` (counted as dropped) when it cites nothing or an unknown step.
    pub fn claim(&mut self, text: impl Into<String>, cites: &[i64]) -> Option<Claim> {
        let cited = !cites.is_empty() && cites.iter().all(|id| self.known_steps.contains(id));
        if !cited {
            self.dropped += 1;
            return None;
        }
        let mut cites = cites.to_vec();
        cites.sort_unstable();
        cites.dedup();
        Some(Claim {
            text: text.into(),
            cites,
        })
    }

    fn push(&mut self, list: &mut Vec<Claim>, text: impl Into<String>, cites: &[i64]) {
        if let Some(claim) = self.claim(text, cites) {
            list.push(claim);
        }
    }

    pub fn dropped(&self) -> usize {
        self.dropped
    }
}

/// How sure the report is that `top` caused the incident:
/// - none (no suspected cause) when its impact z is below [`MINIMUM_IMPACT_Z`];
/// - `high` when its impact reaches [`STRONG_IMPACT_Z`], it is on a service the incident names,
///   a metric change of those services started within [`FOLLOWS_WITHIN_MINUTES`] after it, and it
///   scores at least twice the runner-up;
/// - `medium` when its impact is strong and it is on an affected service or a change follows it;
/// - `low` otherwise.
pub fn confidence(
    top: &Suspect,
    runner_up: Option<&Suspect>,
    change_follows: bool,
) -> Option<(&'static str, Vec<String>)> {
    let impact = impact_of(top);
    if impact < MINIMUM_IMPACT_Z {
        return None;
    }
    let mut rules = vec![format!("impact z {impact:.1} ≥ {MINIMUM_IMPACT_Z}")];
    let strong = impact >= STRONG_IMPACT_Z;
    if strong {
        rules.push(format!("impact z ≥ {STRONG_IMPACT_Z}"));
    }
    if top.on_affected_service {
        rules.push("on a service the incident names".into());
    }
    if change_follows {
        rules.push(format!(
            "a metric change started within {FOLLOWS_WITHIN_MINUTES} min after it"
        ));
    }
    let clear_lead = runner_up.is_none_or(|next| top.score >= 2.0 * next.score);
    if clear_lead {
        rules.push("scores at least twice the runner-up".into());
    }
    let level = if strong && top.on_affected_service && change_follows && clear_lead {
        "high"
    } else if strong && (top.on_affected_service || change_follows) {
        "medium"
    } else {
        "low"
    };
    Some((level, rules))
}

fn impact_of(suspect: &Suspect) -> f64 {
    suspect
        .error_rate_z
        .unwrap_or(0.0)
        .max(suspect.latency_p95_ms_z.unwrap_or(0.0))
}

/// The report for `findings`.
pub(crate) fn build(findings: &Findings) -> Report {
    let mut builder = ReportBuilder::new(findings.step_ids.iter().copied());
    let mut what = Vec::new();
    let mut evidence = Vec::new();
    let mut ruled_out = Vec::new();
    let mut next_steps = Vec::new();

    let (incident, title, services, opened_at) = match &findings.incident {
        Some((step, detail)) => {
            let incident = &detail.incident;
            builder.push(
                &mut what,
                format!(
                    "{} ({}, {}) opened at {} on {}: {}.",
                    incident.reference,
                    incident.severity,
                    incident.status,
                    incident.opened_at.format("%Y-%m-%d %H:%M UTC"),
                    if incident.services.is_empty() {
                        "no named service".to_owned()
                    } else {
                        incident.services.join(", ")
                    },
                    incident.title
                ),
                &[*step],
            );
            (
                incident.reference.clone(),
                incident.title.clone(),
                incident.services.clone(),
                Some(incident.opened_at),
            )
        }
        None => (String::new(), String::new(), Vec::new(), None),
    };

    // Anomaly windows of the incident's services, strongest first.
    let mut windows: Vec<(i64, &AnomalyWindow)> = findings
        .anomalies
        .iter()
        .flat_map(|(step, report)| report.windows.iter().map(move |window| (*step, window)))
        .collect();
    windows.sort_by(|a, b| b.1.peak_z.abs().total_cmp(&a.1.peak_z.abs()));
    for (step, window) in windows.iter().take(3) {
        builder.push(
            &mut what,
            format!(
                "{} {} went {} its baseline from {}{}: peak {:.4} against {:.4} (z {:.1}).",
                window.service,
                window.metric,
                window.direction,
                window.start.format("%H:%M UTC"),
                match window.end {
                    Some(end) => format!(" to {}", end.format("%H:%M UTC")),
                    None => " and is still going".to_owned(),
                },
                window.peak_value,
                window.baseline,
                window.peak_z
            ),
            &[*step],
        );
    }
    if windows.is_empty() && !findings.anomalies.is_empty() {
        let steps: Vec<i64> = findings.anomalies.iter().map(|(step, _)| *step).collect();
        builder.push(
            &mut evidence,
            "No metric of the incident's services left its baseline in the 3 hours before it opened.",
            &steps,
        );
    }

    // The deployments before it, ranked by internal-mcp.
    let mut suspected_cause = None;
    if let Some((correlation_step, correlation)) = &findings.correlation {
        let suspects = &correlation.suspects;
        match suspects.first() {
            None => builder.push(
                &mut ruled_out,
                "A deployment: none started in the 3 hours before the incident opened.",
                &[*correlation_step],
            ),
            Some(top) => {
                let change = windows
                    .iter()
                    .map(|(step, window)| (*step, *window))
                    .chain(
                        correlation
                            .metric_changes
                            .iter()
                            .map(|window| (*correlation_step, window)),
                    )
                    .filter(|(_, window)| services.contains(&window.service))
                    .find(|(_, window)| {
                        window.start >= top.started_at
                            && window.start
                                <= top.started_at + Duration::minutes(FOLLOWS_WITHIN_MINUTES)
                    });
                match confidence(top, suspects.get(1), change.is_some()) {
                    Some((level, rules)) => {
                        let mut cites = vec![*correlation_step];
                        cites.extend(change.map(|(step, _)| step));
                        let text = format!(
                            "The deployment of {} {} ({}) at {}, {:.0} min before the incident opened{}{}.",
                            top.service,
                            top.version,
                            top.status,
                            top.started_at.format("%H:%M UTC"),
                            top.minutes_before_incident,
                            match (top.error_rate_before, top.error_rate_after) {
                                (Some(before), Some(after)) => format!(
                                    ": error_rate went from {before:.4} to {after:.4} in the 30 min after it (z {:.1})",
                                    top.error_rate_z.unwrap_or(0.0)
                                ),
                                _ => String::new(),
                            },
                            match change {
                                Some((_, window)) => format!(
                                    "; {} {} rose {:.0} min after it",
                                    window.service,
                                    window.metric,
                                    (window.start - top.started_at).num_seconds() as f64 / 60.0
                                ),
                                None => String::new(),
                            }
                        );
                        if let Some(claim) = builder.claim(text, &cites) {
                            evidence.push(claim.clone());
                            suspected_cause = Some(SuspectedCause {
                                service: top.service.clone(),
                                version: top.version.clone(),
                                deployment_id: top.deployment_id,
                                deployment_status: top.status.clone(),
                                started_at: top.started_at,
                                confidence: level.to_owned(),
                                claim,
                                rules,
                            });
                            let step = if top.status == "rolled_back" {
                                format!(
                                    "{} {} is marked rolled back: confirm the rollback held and keep {} from shipping again until it is fixed.",
                                    top.service, top.version, top.version
                                )
                            } else {
                                format!(
                                    "Consider rolling {} back from {}; compare its error rate before and after.",
                                    top.service, top.version
                                )
                            };
                            builder.push(&mut next_steps, step, &[*correlation_step]);
                        }
                    }
                    None => builder.push(
                        &mut ruled_out,
                        format!(
                            "A deployment: none of the {} in the window moved its service's error rate or latency (top z {:.1}).",
                            suspects.len(),
                            impact_of(top)
                        ),
                        &[*correlation_step],
                    ),
                }
                for other in suspects.iter().skip(1).take(5) {
                    if impact_of(other) < MINIMUM_IMPACT_Z {
                        builder.push(
                            &mut ruled_out,
                            format!(
                                "{} {} ({:.0} min before): its service's error rate and latency did not move (z {:.1}).",
                                other.service,
                                other.version,
                                other.minutes_before_incident,
                                impact_of(other)
                            ),
                            &[*correlation_step],
                        );
                    }
                }
            }
        }
    }

    if let Some((step, alerts)) = &findings.alerts {
        let firing: Vec<_> = alerts
            .alerts
            .iter()
            .filter(|alert| alert.state == "firing")
            .collect();
        let linked = alerts.alerts.iter().filter(|alert| alert.linked).count();
        if let Some(first) = alerts.alerts.iter().min_by_key(|alert| alert.started_at) {
            builder.push(
                &mut evidence,
                format!(
                    "{} alert(s) around the opening ({} linked, {} still firing); the first, {} on {} {}, started at {}.",
                    alerts.alerts.len(),
                    linked,
                    firing.len(),
                    first.monitor,
                    first.service,
                    first.metric,
                    first.started_at.format("%H:%M UTC")
                ),
                &[*step],
            );
        } else {
            builder.push(
                &mut evidence,
                "No alert is linked to the incident or fired on its services around its opening.",
                &[*step],
            );
        }
        if !firing.is_empty() {
            builder.push(
                &mut next_steps,
                format!(
                    "{} alert(s) are still firing: acknowledge them once someone owns the incident.",
                    firing.len()
                ),
                &[*step],
            );
        }
    }

    for (step, burn) in &findings.slo {
        builder.push(
            &mut evidence,
            format!(
                "{} burned {:.0}% of its {}% error budget over the 24 hours to 30 min after the opening (burn rate {:.1}{}).",
                burn.service,
                burn.budget_consumed_percent,
                burn.objective_percent,
                burn.burn_rate,
                match burn.burn_rate_last_hour {
                    Some(rate) => format!(", last hour {rate:.1}"),
                    None => String::new(),
                }
            ),
            &[*step],
        );
        if burn.burn_rate_last_hour.is_some_and(|rate| rate >= 14.4) {
            builder.push(
                &mut next_steps,
                format!(
                    "{} burns its error budget at page-now speed (≥ 14.4 over the last hour): keep a responder on it.",
                    burn.service
                ),
                &[*step],
            );
        }
    }

    for (step, tool, message) in &findings.gaps {
        builder.push(
            &mut evidence,
            format!("{tool} could not answer: {message}"),
            &[*step],
        );
    }
    if suspected_cause.is_none()
        && let (Some(opened_at), Some((step, _))) = (opened_at, &findings.incident)
    {
        builder.push(
            &mut next_steps,
            format!(
                "No deployment explains it: look at dependencies and traffic around {}.",
                opened_at.format("%H:%M UTC")
            ),
            &[*step],
        );
    }

    Report {
        incident,
        title,
        generated_by: "playbook".into(),
        what_is_going_on: what,
        suspected_cause,
        anomaly_windows: windows
            .iter()
            .take(10)
            .map(|(step, window)| WindowSummary {
                service: window.service.clone(),
                metric: window.metric.clone(),
                direction: window.direction.clone(),
                start: window.start,
                end: window.end,
                peak_z: window.peak_z,
                step: *step,
            })
            .collect(),
        evidence,
        ruled_out,
        next_steps,
        dropped_claims: builder.dropped(),
        synthesis: None,
    }
}

/// The timeline note for `report`: plain Markdown, at most `max_chars` characters, ending with
/// the line that names the investigation (how a later attempt recognises it on the timeline).
pub fn note(report: &Report, investigation_id: Uuid, max_chars: usize) -> String {
    let cite = |claim: &Claim| {
        let steps: Vec<String> = claim.cites.iter().map(i64::to_string).collect();
        format!("{} [step {}]", claim.text, steps.join(", "))
    };
    let by = if report.generated_by == "playbook" {
        "playbook, no model"
    } else {
        report.generated_by.as_str()
    };
    let mut text = format!("**AgenticOps investigation** ({by})\n\n");
    for claim in &report.what_is_going_on {
        text.push_str(&format!("- {}\n", cite(claim)));
    }
    match &report.suspected_cause {
        Some(cause) => text.push_str(&format!(
            "\n**Suspected cause ({} confidence):** {}\n",
            cause.confidence,
            cite(&cause.claim)
        )),
        None => text.push_str("\n**Suspected cause:** none the evidence supports.\n"),
    }
    let sections = [
        ("Evidence", &report.evidence),
        ("Ruled out", &report.ruled_out),
        ("Next steps", &report.next_steps),
    ];
    for (heading, claims) in sections {
        if claims.is_empty() {
            continue;
        }
        text.push_str(&format!("\n**{heading}:**\n"));
        for claim in claims.iter().take(8) {
            text.push_str(&format!("- {}\n", cite(claim)));
        }
    }
    let footer = format!("\n{}\n", marker(investigation_id));
    let room = max_chars.saturating_sub(footer.chars().count());
    let mut body = crate::mcp::cap_text(&text, room).0;
    body.push_str(&footer);
    body
}

/// The line that identifies an investigation's note on a timeline.
pub fn marker(investigation_id: Uuid) -> String {
    format!("Steps and trace: internal-host investigation {investigation_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suspect(error_rate_z: f64, on_affected_service: bool, score: f64) -> Suspect {
        Suspect {
            deployment_id: Uuid::nil(),
            service: "checkout-api".into(),
            version: "v2".into(),
            status: "succeeded".into(),
            started_at: Utc::now(),
            minutes_before_incident: 10.0,
            on_affected_service,
            error_rate_before: Some(0.01),
            error_rate_after: Some(0.2),
            error_rate_z: Some(error_rate_z),
            latency_p95_ms_z: None,
            score,
        }
    }

    fn check(top: &Suspect, runner_up: Option<&Suspect>, follows: bool, expected: Option<&str>) {
        let level = confidence(top, runner_up, follows).map(|(level, _)| level);
        assert_eq!(level, expected, "{top:?} {runner_up:?} {follows}");
    }

    #[test]
    fn confidence_follows_the_rules() {
        check(&suspect(25.0, true, 30.0), None, true, Some("high"));
        check(
            &suspect(25.0, true, 30.0),
            Some(&suspect(20.0, true, 25.0)),
            true,
            Some("medium"),
        );
        check(&suspect(25.0, true, 30.0), None, false, Some("medium"));
        check(&suspect(25.0, false, 12.5), None, false, Some("low"));
        check(&suspect(4.0, true, 9.0), None, true, Some("low"));
        check(&suspect(2.0, true, 7.0), None, true, None);
    }

    #[test]
    fn claims_without_a_recorded_step_are_dropped() {
        let mut builder = ReportBuilder::new([1, 2]);
        assert!(
            builder
                .claim("cited", &[2, 1, 2])
                .is_some_and(|claim| claim.cites == [1, 2])
        );
        assert!(builder.claim("uncited", &[]).is_none());
        assert!(builder.claim("made up", &[1, 99]).is_none());
        assert_eq!(builder.dropped(), 2);
    }
}
