//! Privileged operations, through demo-backend's domain layer only (never a raw UPDATE), so its
//! invariants hold: row locks, legal transitions, the acting user on every timeline event.
//!
//! Each takes two calls, and the server, not the model's host, enforces it:
//! 1. Without `confirmation_token`, the tool only reads: it returns the plan (exactly what would
//!    change) and a one-time confirmation token, valid for a few minutes. The token travels only in
//!    the result's `_meta` ([`CONFIRMATION_META_KEY`]), never in the content a model reads: the
//!    host shows the plan to a person and makes the second call itself once they confirm. A model
//!    that only sees the content cannot confirm on its own.
//! 2. With the token and the same arguments, it executes the plan.
//!
//! One mechanism serves every operation: an operation implements [`TwoStep`] (its plan, read on
//! the reader connection, and how a confirmed plan is carried out) and [`Operations::run`] drives
//! both steps. Only the second step is handed the domain layer, so no tool changes data without a
//! confirmed plan, and a server test checks that exactly these tools declare `two_step`.
//!
//! A token is random (256 bits); only its SHA-256 is stored, with the user, the organisation, the
//! tool, a digest of the arguments and an expiry. It is consumed atomically
//! (`UPDATE ... WHERE consumed_at IS NULL AND expires_at > now() RETURNING`), so it works once,
//! for that user in that organisation, for that tool with those arguments, before it expires.
//! Who may call these tools at all (responders and admins) is checked by the server before a tool
//! runs, at both steps.

use chrono::{DateTime, Duration, Utc};
use demo_backend::domain::Tenant;
use demo_backend::domain::incidents::Transition;
use demo_backend::domain::kinds::IncidentStatus;
use demo_backend::domain::monitors::MAX_SILENCE;
use rmcp::schemars;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::analytics::correlation::{IncidentSummary, find_incident};
use crate::analytics::find_service;
use crate::audit::ToolCall;
use crate::auth::Caller;
use crate::error::Error;
use crate::reader::Reader;

/// Plans (first steps) one user may ask for per minute; each stores a confirmation.
pub const MAX_PLANS_PER_MINUTE: i64 = 30;
/// The argument every two-step tool takes its confirmation token in.
pub const CONFIRMATION_TOKEN_ARGUMENT: &str = "confirmation_token";
/// The result `_meta` key that carries an issued confirmation: `{"token", "expires_at", "tool"}`.
pub const CONFIRMATION_META_KEY: &str = "dual-mcp/confirmation";
/// Prefix of confirmation tokens, so they are recognisable in logs and never mistaken for credentials.
const TOKEN_PREFIX: &str = "imc_";
/// The longest incident note the domain layer accepts.
const MAX_NOTE_CHARACTERS: usize = 10_000;

/// The privileged pool, the reader for plans, and how long plans stay confirmable.
#[derive(Debug, Clone)]
pub struct Operations {
    privileged: PgPool,
    reader: Reader,
    confirmation_lifetime: std::time::Duration,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcknowledgeServiceAlertsArguments {
    /// The service's name, e.g. `checkout-api`.
    pub service: String,
    /// Leave out to get the plan; pass the token the plan returned to execute it.
    #[serde(default)]
    pub confirmation_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnotateIncidentArguments {
    /// The incident: its reference (`INC-4`), its number or its id.
    pub incident: String,
    /// The note to add to the incident's timeline, 1 to 10000 characters.
    pub note: String,
    /// Leave out to get the plan; pass the token the plan returned to execute it.
    #[serde(default)]
    pub confirmation_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceMonitorArguments {
    /// The monitor (alert rule): its id, or its exact name as noisy_alert_rules shows it.
    pub monitor: String,
    /// For how long, in minutes from the confirmation: 1 to 10080 (7 days).
    pub minutes: u32,
    /// Leave out to get the plan; pass the token the plan returned to execute it.
    #[serde(default)]
    pub confirmation_token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionIncidentArguments {
    /// The incident: its reference (`INC-4`), its number or its id.
    pub incident: String,
    /// `acknowledge` (open -> acknowledged) or `resolve` (open or acknowledged -> resolved).
    pub action: IncidentAction,
    /// What to record with the change in the timeline (e.g. how it was resolved).
    #[serde(default)]
    pub note: Option<String>,
    /// Leave out to get the plan; pass the token the plan returned to execute it.
    #[serde(default)]
    pub confirmation_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentAction {
    Acknowledge,
    Resolve,
}

/// What a privileged operation answers: the result the caller reads, the rows it touched (for the
/// audit trail), and, for a plan, the confirmation that goes into the result's `_meta` only.
#[derive(Debug, Clone)]
pub struct OperationOutcome {
    pub answer: Value,
    pub rows: usize,
    pub confirmation: Option<IssuedConfirmation>,
}

/// A confirmation token just issued, for the result's `_meta`. Never printed.
#[derive(Clone, Serialize)]
pub struct IssuedConfirmation {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub tool: String,
}

impl std::fmt::Debug for IssuedConfirmation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IssuedConfirmation")
            .field("tool", &self.tool)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl OperationOutcome {
    fn done(answer: Value, rows: usize) -> Self {
        Self {
            answer,
            rows,
            confirmation: None,
        }
    }
}

/// A privileged operation in two steps, implemented by its arguments. [`Operations::run`] drives
/// both steps for every operation; an operation only says what its plan is and how a confirmed
/// plan is carried out. Only `execute` is handed the domain layer (`Tenant`, the privileged pool),
/// and only with a plan a person confirmed: there is no other way for a tool to change data.
pub trait TwoStep: Sync {
    /// The tool's name, as confirmations record it.
    const TOOL: &'static str;
    /// What the operation would change, stored with the confirmation and executed as stored.
    type Plan: Serialize + DeserializeOwned + Send;

    /// The token of the second step, when this is the second step.
    fn confirmation_token(&self) -> Option<&str>;

    /// Refuses arguments no step accepts (checked at both steps).
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Reads what would change, on the reader connection only.
    fn plan(
        &self,
        reader: &Reader,
        caller: &Caller,
    ) -> impl Future<Output = Result<Planned<Self::Plan>, Error>> + Send;

    /// Carries out a confirmed plan through the domain layer.
    fn execute(
        &self,
        plan: Self::Plan,
        tenant: &Tenant,
        reader: &Reader,
        caller: &Caller,
    ) -> impl Future<Output = Result<OperationOutcome, Error>> + Send;
}

/// The first step's finding: a change to confirm, or an answer saying nothing would change.
#[derive(Debug)]
pub enum Planned<P> {
    Change {
        plan: P,
        /// What the person approving reads.
        summary: Value,
        /// Rows the plan touches, for the audit trail.
        rows: usize,
    },
    NothingToDo(Value),
}

/// The tools that take the two steps, one per [`TwoStep`] implementation; a server test checks
/// that exactly these declare `two_step`.
pub const TWO_STEP_TOOLS: [&str; 4] = [
    AcknowledgeServiceAlertsArguments::TOOL,
    AnnotateIncidentArguments::TOOL,
    SilenceMonitorArguments::TOOL,
    TransitionIncidentArguments::TOOL,
];

impl TwoStep for AcknowledgeServiceAlertsArguments {
    const TOOL: &'static str = "acknowledge_service_alerts";
    type Plan = AcknowledgePlan;

    fn confirmation_token(&self) -> Option<&str> {
        self.confirmation_token.as_deref()
    }

    async fn plan(
        &self,
        reader: &Reader,
        caller: &Caller,
    ) -> Result<Planned<AcknowledgePlan>, Error> {
        let plan = plan_acknowledgement(reader, caller, &self.service).await?;
        if plan.alerts.is_empty() {
            return Ok(Planned::NothingToDo(json!({
                "status": "nothing_to_do",
                "plan": {"service": plan.service, "alerts": []},
                "message": format!("{} has no firing, unacknowledged alerts; nothing would change", plan.service),
            })));
        }
        let summary = json!({
            "action": "acknowledge these firing alerts as you",
            "service": plan.service,
            "alert_ids": plan.alerts.iter().map(|alert| alert.id).collect::<Vec<_>>(),
            "alerts": plan.alerts,
        });
        let rows = plan.alerts.len();
        Ok(Planned::Change {
            plan,
            summary,
            rows,
        })
    }

    async fn execute(
        &self,
        plan: AcknowledgePlan,
        tenant: &Tenant,
        reader: &Reader,
        caller: &Caller,
    ) -> Result<OperationOutcome, Error> {
        // The domain layer acknowledges whatever is firing now; refuse if that is no longer what
        // was confirmed (ids are compared, not counts).
        let current = plan_acknowledgement(reader, caller, &plan.service).await?;
        let planned_ids: Vec<Uuid> = plan.alerts.iter().map(|alert| alert.id).collect();
        let current_ids: Vec<Uuid> = current.alerts.iter().map(|alert| alert.id).collect();
        if current.service_id != plan.service_id || current_ids != planned_ids {
            return Err(Error::Refused(format!(
                "the firing alerts of {} changed since the plan (planned {}, now {}); nothing was changed and the \
                 token is used up: call acknowledge_service_alerts again without a token for a new plan",
                plan.service,
                planned_ids.len(),
                current_ids.len()
            )));
        }
        let acknowledged = tenant
            .acknowledge_service_alerts(plan.service_id, &planned_ids)
            .await?;
        let rows = acknowledged.len();
        Ok(OperationOutcome::done(
            json!({"status": "done", "service": plan.service, "acknowledged_alert_ids": acknowledged}),
            rows,
        ))
    }
}

impl TwoStep for AnnotateIncidentArguments {
    const TOOL: &'static str = "annotate_incident";
    type Plan = AnnotatePlan;

    fn confirmation_token(&self) -> Option<&str> {
        self.confirmation_token.as_deref()
    }

    fn validate(&self) -> Result<(), Error> {
        let note = self.note.trim();
        if note.is_empty() || note.chars().count() > MAX_NOTE_CHARACTERS {
            return Err(Error::InvalidArgument(format!(
                "note must be 1 to {MAX_NOTE_CHARACTERS} characters"
            )));
        }
        Ok(())
    }

    async fn plan(&self, reader: &Reader, caller: &Caller) -> Result<Planned<AnnotatePlan>, Error> {
        let incident = read_incident(reader, caller, &self.incident).await?;
        let plan = AnnotatePlan {
            incident_id: incident.id,
            incident: incident.reference,
            title: incident.title,
            note: self.note.trim().to_owned(),
        };
        let summary = json!({
            "action": "add this note to the incident's timeline, as you",
            "incident": plan.incident, "title": plan.title, "note": plan.note,
        });
        Ok(Planned::Change {
            plan,
            summary,
            rows: 1,
        })
    }

    async fn execute(
        &self,
        plan: AnnotatePlan,
        tenant: &Tenant,
        _reader: &Reader,
        _caller: &Caller,
    ) -> Result<OperationOutcome, Error> {
        let created = tenant
            .add_incident_note(plan.incident_id, &plan.note, None)
            .await?;
        Ok(OperationOutcome::done(
            json!({"status": "done", "incident": plan.incident, "event": created.resource}),
            1,
        ))
    }
}

impl TwoStep for SilenceMonitorArguments {
    const TOOL: &'static str = "silence_monitor";
    type Plan = SilencePlan;

    fn confirmation_token(&self) -> Option<&str> {
        self.confirmation_token.as_deref()
    }

    fn validate(&self) -> Result<(), Error> {
        let longest = u32::try_from(MAX_SILENCE.num_minutes()).unwrap_or(u32::MAX);
        if !(1..=longest).contains(&self.minutes) {
            return Err(Error::InvalidArgument(format!(
                "minutes must be between 1 and {longest}"
            )));
        }
        Ok(())
    }

    async fn plan(&self, reader: &Reader, caller: &Caller) -> Result<Planned<SilencePlan>, Error> {
        let mut plan = find_monitor(reader, caller, &self.monitor).await?;
        plan.minutes = self.minutes;
        let summary = json!({
            "action": "silence this monitor: it raises no alerts until the time below",
            "monitor": plan.monitor, "monitor_id": plan.monitor_id, "service": plan.service, "metric": plan.metric,
            "currently_silenced_until": plan.currently_silenced_until,
            "minutes": plan.minutes,
            "silenced_until_if_confirmed_now": Utc::now() + Duration::minutes(i64::from(plan.minutes)),
        });
        Ok(Planned::Change {
            plan,
            summary,
            rows: 1,
        })
    }

    async fn execute(
        &self,
        plan: SilencePlan,
        tenant: &Tenant,
        _reader: &Reader,
        _caller: &Caller,
    ) -> Result<OperationOutcome, Error> {
        let monitor = tenant
            .silence_monitor(plan.monitor_id, Duration::minutes(i64::from(plan.minutes)))
            .await?;
        Ok(OperationOutcome::done(
            json!({"status": "done", "monitor": monitor}),
            1,
        ))
    }
}

impl TwoStep for TransitionIncidentArguments {
    const TOOL: &'static str = "transition_incident";
    type Plan = TransitionPlan;

    fn confirmation_token(&self) -> Option<&str> {
        self.confirmation_token.as_deref()
    }

    fn validate(&self) -> Result<(), Error> {
        if self
            .note()
            .is_some_and(|note| note.chars().count() > MAX_NOTE_CHARACTERS)
        {
            return Err(Error::InvalidArgument(format!(
                "note must be at most {MAX_NOTE_CHARACTERS} characters"
            )));
        }
        Ok(())
    }

    async fn plan(
        &self,
        reader: &Reader,
        caller: &Caller,
    ) -> Result<Planned<TransitionPlan>, Error> {
        let incident = read_incident(reader, caller, &self.incident).await?;
        let from = parse_status(&incident.status)?;
        // The domain layer decides what is legal; asking it now gives an early, clear refusal.
        let to = self.transition().apply(from)?;
        let plan = TransitionPlan {
            incident_id: incident.id,
            incident: incident.reference,
            title: incident.title,
            from: incident.status,
            to: status_name(to).to_owned(),
            note: self.note().map(str::to_owned),
        };
        let summary = json!({
            "action": "change the incident's status, as you",
            "incident": plan.incident, "title": plan.title, "from": plan.from, "to": plan.to, "note": plan.note,
        });
        Ok(Planned::Change {
            plan,
            summary,
            rows: 1,
        })
    }

    async fn execute(
        &self,
        plan: TransitionPlan,
        tenant: &Tenant,
        _reader: &Reader,
        _caller: &Caller,
    ) -> Result<OperationOutcome, Error> {
        let incident = tenant
            .transition_incident(plan.incident_id, self.transition(), plan.note.as_deref())
            .await?;
        Ok(OperationOutcome::done(
            json!({"status": "done", "incident": incident}),
            1,
        ))
    }
}

impl TransitionIncidentArguments {
    fn note(&self) -> Option<&str> {
        self.note
            .as_deref()
            .map(str::trim)
            .filter(|note| !note.is_empty())
    }

    fn transition(&self) -> Transition {
        match self.action {
            IncidentAction::Acknowledge => Transition::Acknowledge,
            IncidentAction::Resolve => Transition::Resolve,
        }
    }
}

/// What acknowledging a service's alerts would change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcknowledgePlan {
    service_id: Uuid,
    service: String,
    alerts: Vec<PlannedAlert>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct PlannedAlert {
    id: Uuid,
    monitor: String,
    summary: String,
    severity: String,
    started_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnnotatePlan {
    incident_id: Uuid,
    incident: String,
    title: String,
    note: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
pub struct SilencePlan {
    monitor_id: Uuid,
    monitor: String,
    service: String,
    metric: String,
    currently_silenced_until: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    minutes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionPlan {
    incident_id: Uuid,
    incident: String,
    title: String,
    from: String,
    to: String,
    note: Option<String>,
}

/// A stored confirmation, as the diagnosis of a refused token sees it.
#[derive(Debug, sqlx::FromRow)]
struct StoredConfirmation {
    organization_id: Uuid,
    user_id: Uuid,
    tool: String,
    arguments_digest: Vec<u8>,
    consumed_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    expired: bool,
}

impl Operations {
    pub fn new(
        privileged: PgPool,
        reader: Reader,
        confirmation_lifetime: std::time::Duration,
    ) -> Self {
        Self {
            privileged,
            reader,
            confirmation_lifetime,
        }
    }

    /// Runs one step of a privileged operation, the same way for every one: without a token, it
    /// plans (reading only) and issues a token bound to the whole arguments; with a token, it
    /// consumes it (same user, organisation, tool and arguments, unexpired, once) and only then
    /// hands the confirmed plan the domain layer to carry it out.
    pub async fn run<O: TwoStep>(
        &self,
        call: &ToolCall,
        operation: &O,
    ) -> Result<OperationOutcome, Error> {
        operation.validate()?;
        let caller = &call.caller;
        let Some(token) = operation.confirmation_token() else {
            return match operation.plan(&self.reader, caller).await? {
                Planned::NothingToDo(answer) => Ok(OperationOutcome::done(answer, 0)),
                Planned::Change {
                    plan,
                    summary,
                    rows,
                } => self.issue(call, O::TOOL, &plan, summary, rows).await,
            };
        };
        let plan: O::Plan = self.consume(call, O::TOOL, token).await?;
        let tenant = Tenant::new(
            self.privileged.clone(),
            caller.organization_id,
            caller.user_id,
        );
        operation.execute(plan, &tenant, &self.reader, caller).await
    }

    /// Stores the plan under a new token and returns the first step's answer: the plan in the
    /// content, the token apart for the result's `_meta`.
    async fn issue<P: Serialize>(
        &self,
        call: &ToolCall,
        tool: &str,
        plan: &P,
        summary: Value,
        rows: usize,
    ) -> Result<OperationOutcome, Error> {
        let caller = &call.caller;
        let digest = call.arguments_digest();
        let recent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM internal_mcp_confirmations
              WHERE organization_id = $1 AND user_id = $2 AND created_at > now() - interval '1 minute'",
        )
        .bind(caller.organization_id)
        .bind(caller.user_id)
        .fetch_one(&self.privileged)
        .await?;
        if recent >= MAX_PLANS_PER_MINUTE {
            return Err(Error::Refused(format!(
                "too many plans: you asked for {recent} in the last minute (at most {MAX_PLANS_PER_MINUTE}); \
                 confirm or drop the ones you have, and retry in a minute"
            )));
        }
        let token = new_token()?;
        let lifetime =
            Duration::from_std(self.confirmation_lifetime).unwrap_or(Duration::minutes(5));
        let expires_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO internal_mcp_confirmations
                 (token_hash, organization_id, user_id, tool, arguments_digest, plan, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, now() + $7)
             RETURNING expires_at",
        )
        .bind(token_hash(&token).as_slice())
        .bind(caller.organization_id)
        .bind(caller.user_id)
        .bind(tool)
        .bind(digest.as_slice())
        .bind(sqlx::types::Json(plan))
        .bind(lifetime)
        .fetch_one(&self.privileged)
        .await?;
        let answer = json!({
            "status": "confirmation_required",
            "plan": summary,
            "expires_at": expires_at,
            "next_step": format!(
                "Nothing has changed yet. A person must approve this plan: show it to the user. The confirmation \
                 token is in this result's _meta (\"{CONFIRMATION_META_KEY}\"), for the host, not the model; once \
                 the user confirms, the host calls {tool} again with the same arguments plus confirmation_token. \
                 It works once, only for this user, until expires_at."
            ),
        });
        Ok(OperationOutcome {
            answer,
            rows,
            confirmation: Some(IssuedConfirmation {
                token,
                expires_at,
                tool: tool.to_owned(),
            }),
        })
    }

    /// Consumes a token for this caller, tool and arguments, returning its plan; or says precisely
    /// why the token is refused. Nothing is consumed by a refused attempt.
    async fn consume<P: DeserializeOwned>(
        &self,
        call: &ToolCall,
        tool: &str,
        token: &str,
    ) -> Result<P, Error> {
        let caller = &call.caller;
        let digest = call.arguments_digest();
        let hash = token_hash(token.trim());
        let plan: Option<sqlx::types::Json<Value>> = sqlx::query_scalar(
            "UPDATE internal_mcp_confirmations SET consumed_at = now()
              WHERE token_hash = $1 AND organization_id = $2 AND user_id = $3 AND tool = $4
                AND arguments_digest = $5 AND consumed_at IS NULL AND expires_at > now()
             RETURNING plan",
        )
        .bind(hash.as_slice())
        .bind(caller.organization_id)
        .bind(caller.user_id)
        .bind(tool)
        .bind(digest.as_slice())
        .fetch_optional(&self.privileged)
        .await?;
        if let Some(plan) = plan {
            return serde_json::from_value(plan.0).map_err(|error| {
                Error::Refused(format!(
                    "the stored plan could not be read ({error}); ask for a new plan"
                ))
            });
        }
        let stored: Option<StoredConfirmation> = sqlx::query_as(
            "SELECT organization_id, user_id, tool, arguments_digest, consumed_at, expires_at, expires_at <= now() AS expired
               FROM internal_mcp_confirmations WHERE token_hash = $1",
        )
        .bind(hash.as_slice())
        .fetch_optional(&self.privileged)
        .await?;
        let again = format!("call {tool} without confirmation_token for a new plan");
        let reason = match stored {
            None => format!("unknown confirmation token; {again}"),
            Some(stored)
                if stored.organization_id != caller.organization_id
                    || stored.user_id != caller.user_id =>
            {
                format!(
                    "this confirmation token was issued to another user; only that user can confirm it. {again}"
                )
            }
            Some(stored) if stored.tool != tool => {
                format!(
                    "this confirmation token confirms {}, not {tool}; {again}",
                    stored.tool
                )
            }
            Some(stored) if stored.consumed_at.is_some() => format!(
                "this confirmation token was already used at {}; a token works once. {again}",
                stored
                    .consumed_at
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default()
            ),
            Some(stored) if stored.expired => {
                format!(
                    "this confirmation token expired at {}; {again}",
                    stored.expires_at.to_rfc3339()
                )
            }
            Some(stored) if stored.arguments_digest.as_slice() != digest.as_slice() => format!(
                "the arguments differ from the ones this confirmation token was issued for; repeat them exactly, or {again}"
            ),
            Some(_) => format!("the confirmation token cannot be used; {again}"),
        };
        Err(Error::Refused(reason))
    }
}

/// The firing, unacknowledged alerts of a service, as acknowledging them would find them.
async fn plan_acknowledgement(
    reader: &Reader,
    caller: &Caller,
    service: &str,
) -> Result<AcknowledgePlan, Error> {
    let mut transaction = reader.begin(caller.organization_id).await?;
    let service = find_service(reader, &mut transaction, service).await?;
    let alerts: Vec<PlannedAlert> = sqlx::query_as(
        "SELECT a.id, m.name AS monitor, a.summary, a.severity::text AS severity, a.started_at
           FROM alerts a
           JOIN monitors m ON m.organization_id = a.organization_id AND m.id = a.monitor_id
          WHERE a.service_id = $1 AND a.state = 'firing' AND a.acknowledged_at IS NULL
          ORDER BY a.id",
    )
    .bind(service.id)
    .fetch_all(&mut *transaction)
    .await
    .map_err(|error| reader.failure(error))?;
    transaction.rollback().await?;
    Ok(AcknowledgePlan {
        service_id: service.id,
        service: service.name,
        alerts,
    })
}

/// The one monitor named (or identified) `monitor` in the caller's organisation.
async fn find_monitor(
    reader: &Reader,
    caller: &Caller,
    monitor: &str,
) -> Result<SilencePlan, Error> {
    let monitor = monitor.trim();
    let mut transaction = reader.begin(caller.organization_id).await?;
    let found: Vec<SilencePlan> = sqlx::query_as(
        "SELECT m.id AS monitor_id, m.name AS monitor, s.name AS service, m.metric,
                m.silenced_until AS currently_silenced_until
           FROM monitors m
           JOIN services s ON s.organization_id = m.organization_id AND s.id = m.service_id
          WHERE m.id = $1 OR m.name = $2
          ORDER BY m.name LIMIT 2",
    )
    .bind(Uuid::parse_str(monitor).ok())
    .bind(monitor)
    .fetch_all(&mut *transaction)
    .await
    .map_err(|error| reader.failure(error))?;
    transaction.rollback().await?;
    let mut found = found.into_iter();
    match (found.next(), found.next()) {
        (Some(plan), None) => Ok(plan),
        (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
            "several monitors are named {monitor:?}; pass the monitor's id instead"
        ))),
        (None, _) => Err(Error::NotFound(format!(
            "no monitor {monitor:?} in your organisation; noisy_alert_rules lists monitors with their ids"
        ))),
    }
}

/// An incident of the caller's organisation by reference, number or id.
async fn read_incident(
    reader: &Reader,
    caller: &Caller,
    incident: &str,
) -> Result<IncidentSummary, Error> {
    let mut transaction = reader.begin(caller.organization_id).await?;
    let incident = find_incident(reader, &mut transaction, incident).await?;
    transaction.rollback().await?;
    Ok(incident)
}

/// SHA-256 over a call's whole arguments, as received, without the confirmation token and
/// without arguments given as `null` (the same as leaving them out). serde_json's map keeps keys
/// sorted, so the encoding is canonical. Every argument counts: one added to a tool later is bound
/// to its token without anyone having to remember it.
pub fn arguments_digest(arguments: &Value) -> [u8; 32] {
    let mut bound = arguments.clone();
    if let Value::Object(fields) = &mut bound {
        fields.remove(CONFIRMATION_TOKEN_ARGUMENT);
        fields.retain(|_, value| !value.is_null());
    }
    Sha256::digest(bound.to_string().as_bytes()).into()
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn new_token() -> Result<String, Error> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| Error::Refused(format!("no randomness available for a token: {error}")))?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn parse_status(status: &str) -> Result<IncidentStatus, Error> {
    match status {
        "open" => Ok(IncidentStatus::Open),
        "acknowledged" => Ok(IncidentStatus::Acknowledged),
        "resolved" => Ok(IncidentStatus::Resolved),
        other => Err(Error::Refused(format!("unknown incident status {other:?}"))),
    }
}

fn status_name(status: IncidentStatus) -> &'static str {
    match status {
        IncidentStatus::Open => "open",
        IncidentStatus::Acknowledged => "acknowledged",
        IncidentStatus::Resolved => "resolved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_bind_every_argument_but_the_token() {
        let one = arguments_digest(&json!({"monitor": "m", "minutes": 30}));
        assert_eq!(
            one,
            arguments_digest(
                &json!({"minutes": 30, "monitor": "m", "confirmation_token": "imc_x", "note": null})
            )
        );
        assert_ne!(
            one,
            arguments_digest(&json!({"monitor": "m", "minutes": 31}))
        );
        assert_ne!(
            one,
            arguments_digest(&json!({"monitor": "m", "minutes": 30, "extra": 1}))
        );
    }

    #[test]
    fn tokens_are_random_and_prefixed() {
        let first = new_token().unwrap();
        assert!(first.starts_with("imc_") && first.len() > 40);
        assert_ne!(first, new_token().unwrap());
    }
}
