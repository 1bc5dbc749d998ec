//! The worker loop: every poll interval it asks internal-mcp for new incidents (per organisation,
//! backing off while internal-mcp fails), then claims and runs due investigations one at a time,
//! renewing the lease while it works. A failed attempt goes back to the queue with a backoff and
//! is marked failed after the last one; nothing is lost when internal-mcp is down or this process
//! dies (the lease expires and another worker takes over).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::annotate::{self, NoteOutcome};
use super::playbook::{self, Recorder, RunError};
use super::store::{self, Claim, ClaimedInvestigation};
use super::{AgentIdentity, InvestigationConfig, discovery, report, synthesis};
use crate::app::AppState;
use crate::error::Error;
use crate::mcp::McpConnector;

/// The longest note the worker writes (internal-mcp accepts 10,000 characters).
const MAX_NOTE_CHARACTERS: usize = 9_000;
/// Claims per queue drain (runs, deferrals and skips together) before the loop sleeps once.
const CLAIMS_PER_DRAIN: usize = 100;

/// One AgenticOps worker. Several may run (in one process or many) on the same database.
pub struct Worker {
    pool: PgPool,
    connector: McpConnector,
    config: InvestigationConfig,
    /// The investigation being run, handed back to the queue when the worker stops mid-run.
    current: std::sync::Mutex<Option<Uuid>>,
}

/// Runs a worker on the host's database and internal-mcp connector until `shutdown` completes.
pub async fn run_worker(
    state: &AppState,
    config: InvestigationConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    Worker::new(
        state.database().clone(),
        state.internal_mcp().clone(),
        config,
    )?
    .run(shutdown)
    .await
}

#[derive(Debug, Default, Clone, Copy)]
struct DiscoveryHealth {
    failures: u32,
    next_poll: Option<Instant>,
}

impl Worker {
    /// A worker with a validated configuration.
    pub fn new(
        pool: PgPool,
        connector: McpConnector,
        config: InvestigationConfig,
    ) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            pool,
            connector,
            config,
            current: std::sync::Mutex::new(None),
        })
    }

    /// Polls, claims and investigates until `shutdown` completes. An investigation cut short by
    /// the shutdown goes back to the queue at once (one that dies with its process waits for its
    /// lease to expire, then another worker takes it over).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        tracing::info!(worker = %self.config.worker_id, organizations = self.config.agents.len(), "AgenticOps worker started");
        // Discovery and runs are two loops, so a long run never delays learning of new incidents.
        let discovery = async {
            let mut health: HashMap<Uuid, DiscoveryHealth> = HashMap::new();
            loop {
                self.discover(&mut health).await;
                tokio::time::sleep(self.config.poll_interval).await;
            }
        };
        let runs = async {
            loop {
                self.drain().await;
                tokio::time::sleep(self.config.poll_interval).await;
            }
        };
        tokio::select! {
            () = shutdown => {}
            () = discovery => {}
            () = runs => {}
        }
        let interrupted = self
            .current
            .lock()
            .map(|mut current| current.take())
            .unwrap_or(None);
        if let Some(id) = interrupted {
            // Handed back at once rather than when the lease expires; the attempt still counts.
            let released = store::give_back(
                &self.pool,
                id,
                &self.config.worker_id,
                "the worker stopped during the run",
                Duration::ZERO,
                true,
            )
            .await;
            if let Err(error) = released {
                tracing::warn!(%id, %error, "could not hand an interrupted investigation back");
            }
        }
        tracing::info!(worker = %self.config.worker_id, "AgenticOps worker stopped");
        Ok(())
    }

    async fn discover(&self, health: &mut HashMap<Uuid, DiscoveryHealth>) {
        for agent in &self.config.agents {
            let state = health.entry(agent.organization_id).or_default();
            if state.next_poll.is_some_and(|next| Instant::now() < next) {
                continue;
            }
            match discovery::poll(&self.pool, &self.connector, *agent, &self.config).await {
                Ok(_) => *state = DiscoveryHealth::default(),
                Err(error) => {
                    state.failures += 1;
                    let wait = self.backoff(state.failures);
                    state.next_poll = Some(Instant::now() + wait);
                    tracing::warn!(organization = %agent.organization_id, failures = state.failures, retry_in_ms = wait.as_millis() as u64, %error, "discovery of new incidents failed");
                }
            }
        }
    }

    async fn drain(&self) {
        for _ in 0..CLAIMS_PER_DRAIN {
            let claim = store::claim(
                &self.pool,
                &self.config.worker_id,
                self.config.lease,
                self.config.limits,
            )
            .await;
            match claim {
                Ok(Claim::Empty) => return,
                Ok(Claim::Decided) => continue,
                Ok(Claim::Claimed(investigation)) => self.investigate(investigation).await,
                Err(error) => {
                    tracing::warn!(%error, "claiming an investigation failed");
                    return;
                }
            }
        }
    }

    /// Runs one attempt while renewing its lease; stops at once when the lease is lost.
    async fn investigate(&self, investigation: ClaimedInvestigation) {
        let started = Instant::now();
        self.set_current(Some(investigation.id));
        let outcome = tokio::select! {
            outcome = self.attempt(&investigation) => outcome,
            () = self.keep_lease(&investigation) => Err(RunError::LeaseLost),
        };
        let id = investigation.id;
        let reference = &investigation.incident_reference;
        let result = match outcome {
            Ok(report) => store::complete(&self.pool, id, &self.config.worker_id, &report)
                .await
                .map(|completed| {
                    tracing::info!(incident = %reference, %id, completed, elapsed_ms = started.elapsed().as_millis() as u64, "investigation completed");
                }),
            Err(RunError::LeaseLost) => {
                tracing::warn!(incident = %reference, %id, "lost the lease; another worker has the investigation");
                Ok(())
            }
            Err(RunError::Retryable(message)) => {
                tracing::warn!(incident = %reference, %id, attempt = investigation.attempts, %message, "investigation attempt failed");
                let wait = self.backoff(u32::try_from(investigation.attempts).unwrap_or(1));
                store::give_back(&self.pool, id, &self.config.worker_id, &message, wait, true).await
            }
            Err(RunError::Permanent(message)) => {
                tracing::warn!(incident = %reference, %id, %message, "investigation failed");
                store::give_back(&self.pool, id, &self.config.worker_id, &message, Duration::ZERO, false).await
            }
        };
        self.set_current(None);
        if let Err(error) = result {
            tracing::warn!(%id, %error, "could not record the end of an investigation");
        }
    }

    fn set_current(&self, id: Option<Uuid>) {
        if let Ok(mut current) = self.current.lock() {
            *current = id;
        }
    }

    async fn attempt(
        &self,
        investigation: &ClaimedInvestigation,
    ) -> Result<serde_json::Value, RunError> {
        let agent = self.agent_for(investigation.organization_id)?;
        let session = self
            .connector
            .connect(&agent.acting("viewer"), investigation.correlation_id)
            .await?;
        let recorder = Recorder {
            pool: &self.pool,
            investigation,
            worker_id: &self.config.worker_id,
            pause: self.config.pause_between_calls,
        };
        let result = async {
            let findings =
                playbook::run(&recorder, &session, self.config.max_services_per_run).await?;
            let mut report = report::build(&findings);
            if let Some(synthesis) = &self.config.synthesis {
                let last_attempt =
                    u32::try_from(investigation.attempts).unwrap_or(u32::MAX) >= self.config.max_attempts;
                report = synthesis::synthesize(
                    synthesis,
                    &recorder,
                    &session,
                    &findings,
                    report,
                    last_attempt,
                )
                .await?;
            }
            let note = report::note(&report, investigation.id, MAX_NOTE_CHARACTERS);
            let posted = annotate::post(
                &self.pool,
                &recorder,
                &self.connector,
                &session,
                agent,
                &note,
                self.config.self_confirm_annotations,
            )
            .await?;
            let mut value = serde_json::to_value(&report)
                .map_err(|error| RunError::Permanent(format!("the report could not be encoded: {error}")))?;
            value["note"] = json!({
                "outcome": match posted {
                    NoteOutcome::Posted => "posted",
                    NoteOutcome::Found => "found on the timeline",
                    NoteOutcome::AlreadyDone => "posted by an earlier attempt",
                    NoteOutcome::Disabled => "not posted: the policy does not let the worker confirm annotations",
                },
                "text": note,
            });
            Ok(value)
        }
        .await;
        session.close().await;
        result
    }

    /// Renews the lease every third of its length; returns when it is lost.
    async fn keep_lease(&self, investigation: &ClaimedInvestigation) {
        let interval = self.config.lease / 3;
        loop {
            tokio::time::sleep(interval).await;
            match store::heartbeat(
                &self.pool,
                investigation.id,
                &self.config.worker_id,
                self.config.lease,
            )
            .await
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(error) => tracing::warn!(id = %investigation.id, %error, "heartbeat failed"),
            }
        }
    }

    fn agent_for(&self, organization_id: Uuid) -> Result<AgentIdentity, RunError> {
        self.config
            .agents
            .iter()
            .find(|agent| agent.organization_id == organization_id)
            .copied()
            .ok_or_else(|| {
                RunError::Permanent(format!(
                    "no service user is configured for organisation {organization_id}"
                ))
            })
    }

    /// The wait after `failures` consecutive failures: doubling from the base, capped.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
        self.config
            .retry_backoff
            .saturating_mul(factor)
            .min(self.config.max_retry_backoff)
    }
}
