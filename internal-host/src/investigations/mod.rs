//! AgenticOps: the assistant investigates every new incident by itself, as a job system in the
//! host's own schema (see `migrations/0004_investigations.sql`).
//!
//! - `discovery` learns of new incidents through internal-mcp's `list_incidents_opened_since`
//!   (never the product's tables) and enqueues one investigation per incident.
//! - `store` claims investigations with `FOR UPDATE SKIP LOCKED` under a lease renewed by a
//!   heartbeat, applies the rate limits and the daily budget, and records every MCP call as a step.
//! - `playbook` runs the fixed steps (incident, anomaly windows, ranked deployments, alerts, SLO
//!   burn), each one recorded MCP call, as the organisation's service user with a viewer credential
//!   minted per run.
//! - `report` turns the findings into a deterministic report whose every claim cites the steps it
//!   rests on (a claim without a citation is dropped by code).
//! - `synthesis`, when a model is configured: the model reads the steps, may make a few more
//!   read-only calls (recorded steps too), and adds claims, kept only when they cite recorded
//!   steps; within per-run and daily budgets, falling back to the playbook's report.
//! - `annotate` posts the report to the incident's timeline with `annotate_incident`, the one
//!   privileged operation the worker may confirm itself (by policy), exactly once per incident.
//! - `worker` is the loop tying them together: [`Worker::run`] and [`run_worker`].
//! - `views` reads investigations and their steps for pages, per organisation.

mod annotate;
mod discovery;
mod playbook;
mod report;
mod store;
mod synthesis;
mod views;
mod worker;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::credentials::ActingUser;
use crate::error::Error;

pub use annotate::confirmation_token;
pub use playbook::CHART_STEP;
pub use report::{Claim, Report, SuspectedCause, WindowSummary};
pub use synthesis::SynthesisConfig;
pub use views::{
    InvestigationDetail, InvestigationSummary, RecordedStep, investigation, list_investigations,
};
pub use worker::{Worker, run_worker};

/// The organisation's own agent identity: its service user (`assistant@<domain>` in the seed),
/// whose role in the product is responder. The worker mints viewer credentials for it, and a
/// responder credential only for the annotation its policy lets it confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentIdentity {
    pub organization_id: Uuid,
    pub user_id: Uuid,
}

/// Everything the worker can be told.
#[derive(Debug, Clone)]
pub struct InvestigationConfig {
    /// One service user per organisation to investigate; organisations not listed are ignored.
    pub agents: Vec<AgentIdentity>,
    /// This worker's name in leases (unique per process).
    pub worker_id: String,
    /// How often internal-mcp is asked for new incidents and the queue is looked at.
    pub poll_interval: Duration,
    /// Each poll reaches back this far before the cursor: an incident's `opened_at` is its
    /// transaction's start, which may commit after a later one.
    pub discovery_overlap: Duration,
    /// Where discovery starts for an organisation the first time (no cursor stored yet); by
    /// default `first_discovery_lookback` before now.
    pub discover_since: Option<DateTime<Utc>>,
    pub first_discovery_lookback: Duration,
    /// How long a claim holds without a heartbeat; heartbeats come every third of it.
    pub lease: Duration,
    /// Attempts before an investigation is marked failed with its last error.
    pub max_attempts: u32,
    /// The first retry waits this long, each further one twice as long, up to `max_retry_backoff`.
    pub retry_backoff: Duration,
    pub max_retry_backoff: Duration,
    pub limits: InvestigationLimits,
    /// Policy: the worker confirms its own `annotate_incident` plans (the only privileged tool it
    /// may ever confirm). Off: reports are kept in the host and nothing is written.
    pub self_confirm_annotations: bool,
    /// A pause before every MCP call of a run, to spread the load on internal-mcp.
    pub pause_between_calls: Duration,
    /// At most this many of an incident's services get their own anomaly and SLO steps.
    pub max_services_per_run: usize,
    /// The model's layer of the report; `None`: the playbook's report alone.
    pub synthesis: Option<SynthesisConfig>,
}

/// Rate limits and budget, per organisation.
#[derive(Debug, Clone, Copy)]
pub struct InvestigationLimits {
    /// Investigations started per organisation per UTC day; the excess is skipped, visibly.
    pub daily_budget_per_organization: u32,
    /// Investigations started per organisation per minute; the excess waits in the queue.
    pub per_organization_per_minute: u32,
    /// Investigations started per service per hour; the excess is skipped as a duplicate.
    pub per_service_per_hour: u32,
}

impl InvestigationConfig {
    /// The defaults, for these agents.
    pub fn new(agents: Vec<AgentIdentity>) -> Self {
        Self {
            agents,
            worker_id: format!("{}-{}", std::process::id(), Uuid::new_v4()),
            poll_interval: Duration::from_secs(3),
            discovery_overlap: Duration::from_secs(120),
            discover_since: None,
            first_discovery_lookback: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(30),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(2),
            max_retry_backoff: Duration::from_secs(60),
            limits: InvestigationLimits {
                daily_budget_per_organization: 50,
                per_organization_per_minute: 20,
                per_service_per_hour: 3,
            },
            self_confirm_annotations: true,
            pause_between_calls: Duration::ZERO,
            max_services_per_run: 3,
            synthesis: None,
        }
    }

    /// Refuses values that would make the worker useless or unbounded.
    pub fn validate(&self) -> Result<(), Error> {
        let refuse = |message: &str| Err(Error::Startup(format!("investigations: {message}")));
        if self.worker_id.trim().is_empty() {
            return refuse("the worker id must not be empty");
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(60) {
            return refuse("the poll interval must be between 1 ms and 60 s");
        }
        if self.lease < Duration::from_millis(300) || self.lease > Duration::from_secs(600) {
            return refuse("the lease must be between 300 ms and 600 s");
        }
        if !(1..=10).contains(&self.max_attempts) {
            return refuse("max attempts must be between 1 and 10");
        }
        if self.retry_backoff.is_zero() || self.max_retry_backoff < self.retry_backoff {
            return refuse("the retry backoff must be positive and below its maximum");
        }
        let limits = self.limits;
        if limits.daily_budget_per_organization == 0
            || limits.per_organization_per_minute == 0
            || limits.per_service_per_hour == 0
        {
            return refuse("rate limits and the daily budget must be at least 1");
        }
        if !(1..=10).contains(&self.max_services_per_run) {
            return refuse("services per run must be between 1 and 10");
        }
        if let Some(synthesis) = &self.synthesis
            && (synthesis.max_model_calls == 0
                || synthesis.max_output_tokens == 0
                || synthesis.time_limit.is_zero()
                || synthesis.daily_model_calls_per_organization == 0
                || synthesis.daily_model_time_per_organization.is_zero())
        {
            return refuse("the model's budgets must be at least 1");
        }
        Ok(())
    }
}

impl AgentIdentity {
    /// Parses `<organization id>:<user id>` pairs separated by commas (e.g. from an environment
    /// variable); an empty text is no agents.
    pub fn parse_list(text: &str) -> Result<Vec<AgentIdentity>, Error> {
        text.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let parsed = pair.split_once(':').and_then(|(organization, user)| {
                    Some(AgentIdentity {
                        organization_id: Uuid::parse_str(organization.trim()).ok()?,
                        user_id: Uuid::parse_str(user.trim()).ok()?,
                    })
                });
                parsed.ok_or_else(|| {
                    Error::Startup(format!(
                        "investigations: {pair:?} is not <organization id>:<user id>"
                    ))
                })
            })
            .collect()
    }

    /// The service user with `role` (`viewer` for reading, `responder` to annotate).
    pub(crate) fn acting(&self, role: &str) -> ActingUser {
        ActingUser {
            user_id: self.user_id,
            organization_id: self.organization_id,
            role: role.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_lists_parse_or_fail_closed() {
        let organization = Uuid::new_v4();
        let user = Uuid::new_v4();
        let parsed = AgentIdentity::parse_list(&format!(" {organization}:{user} ,")).unwrap();
        assert_eq!(
            parsed,
            [AgentIdentity {
                organization_id: organization,
                user_id: user
            }]
        );
        assert!(AgentIdentity::parse_list("").unwrap().is_empty());
        assert!(AgentIdentity::parse_list("nonsense").is_err());
        assert!(AgentIdentity::parse_list(&format!("{organization}:x")).is_err());
    }

    #[test]
    fn the_defaults_are_valid_and_unsafe_values_are_refused() {
        let config = InvestigationConfig::new(Vec::new());
        assert!(config.validate().is_ok());
        let mut zero_budget = config.clone();
        zero_budget.limits.daily_budget_per_organization = 0;
        assert!(zero_budget.validate().is_err());
        let mut endless = config;
        endless.max_attempts = 0;
        assert!(endless.validate().is_err());
    }
}
