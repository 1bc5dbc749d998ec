//! Incidents: their lifecycle (open -> acknowledged -> resolved), timeline, linked alerts and
//! services. Every change happens in one transaction with the incident row locked, and leaves a
//! timeline event naming the acting user.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{Acquire, PgConnection};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::alerts::{Alert, SELECT_ALERTS};
use crate::domain::idempotency::{Claim, fingerprint};
use crate::domain::kinds::{IncidentStatus, Severity};
use crate::domain::page::{Page, PageRequest, time_and_id_key};
use crate::domain::services::UserSummary;
use crate::domain::{DomainError, Tenant};

const MAX_TITLE: usize = 200;
const MAX_TEXT: usize = 10_000;
const MAX_LINKED: usize = 50;

/// A change of status a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Acknowledge,
    Resolve,
}

impl Transition {
    /// The status after this transition, or why it is not allowed from `from`.
    pub fn apply(self, from: IncidentStatus) -> Result<IncidentStatus, DomainError> {
        use IncidentStatus::{Acknowledged, Open, Resolved};
        match (self, from) {
            (Transition::Acknowledge, Open) => Ok(Acknowledged),
            (Transition::Resolve, Open | Acknowledged) => Ok(Resolved),
            (Transition::Acknowledge, Acknowledged) => Err(DomainError::Conflict(
                "the incident is already acknowledged".into(),
            )),
            (_, Resolved) => Err(DomainError::Conflict(
                "the incident is resolved; resolved incidents cannot change status".into(),
            )),
        }
    }

    fn event_kind(self) -> &'static str {
        match self {
            Transition::Acknowledge => "acknowledged",
            Transition::Resolve => "resolved",
        }
    }
}

/// An incident as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Incident {
    pub id: Uuid,
    /// Per-organisation number, e.g. 42.
    pub number: i32,
    /// How people refer to it, e.g. `INC-42`.
    pub reference: String,
    pub title: String,
    pub summary: String,
    pub severity: Severity,
    pub status: IncidentStatus,
    #[schema(value_type = Option<UserSummary>)]
    pub commander: Option<Json<UserSummary>>,
    #[schema(value_type = UserSummary)]
    pub created_by: Json<UserSummary>,
    pub opened_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// The affected services.
    #[schema(value_type = Vec<ServiceReference>)]
    pub services: Json<Vec<ServiceReference>>,
}

/// A service as an incident refers to it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceReference {
    pub id: Uuid,
    pub name: String,
}

/// An incident with everything linked to it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: Incident,
    pub alerts: Vec<Alert>,
    /// Lifecycle changes, notes and linked alerts, oldest first.
    pub timeline: Vec<TimelineEvent>,
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct TimelineEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// `opened`, `acknowledged`, `resolved`, `note` or `alert_linked`.
    pub kind: String,
    #[schema(value_type = Option<UserSummary>)]
    pub author: Option<Json<UserSummary>>,
    pub body: String,
}

/// What a client sends to open an incident.
///
/// The schema's patterns say what [`NewIncident::validate`] checks, in the regular-expression
/// syntax of JSON Schema: the whitespace class is exactly what `str::trim` removes (Unicode
/// `White_Space`), and no text may contain NUL (PostgreSQL cannot store it).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    /// One line saying what is wrong: 1 to 200 characters once leading and trailing whitespace
    /// is trimmed (it is stored trimmed), no NUL.
    #[schema(
        pattern = r"^[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\u0000](?:[^\u0000]{0,198}[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\u0000])?[\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub title: String,
    pub severity: Severity,
    /// What is known so far: at most 10000 characters, no NUL.
    #[serde(default)]
    #[schema(max_length = 10000, pattern = r"^[^\u0000]*$")]
    pub summary: String,
    /// Affected services (at most 50; repeated ids count once).
    #[serde(default)]
    #[schema(max_items = 50)]
    pub service_ids: Vec<Uuid>,
    /// Alerts to link (at most 50); they must not belong to another incident.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub alert_ids: Vec<Uuid>,
    /// The user leading the response; defaults to nobody.
    #[serde(default)]
    pub commander_id: Option<Uuid>,
}

/// The result of a creating call that honours an idempotency key.
#[derive(Debug, Clone)]
pub struct Created<T> {
    pub resource: T,
    /// True when the key had been used before and nothing new was created.
    pub replayed: bool,
}

/// Narrows an incident listing; `since`/`until` bound `opened_at`.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub status: Option<IncidentStatus>,
    pub severity: Option<Severity>,
    pub service_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

const SELECT_INCIDENTS: &str = "
    SELECT i.id, i.number, 'INC-' || i.number AS reference, i.title, i.summary, i.severity, i.status,
           CASE WHEN c.id IS NULL THEN NULL
                ELSE json_build_object('id', c.id, 'name', c.name, 'email', c.email) END AS commander,
           json_build_object('id', cb.id, 'name', cb.name, 'email', cb.email) AS created_by,
           i.opened_at, i.acknowledged_at, i.resolved_at,
           (SELECT coalesce(json_agg(json_build_object('id', s.id, 'name', s.name) ORDER BY s.name), '[]')
              FROM incident_services isv
              JOIN services s ON s.organization_id = isv.organization_id AND s.id = isv.service_id
             WHERE isv.organization_id = i.organization_id AND isv.incident_id = i.id) AS services
      FROM incidents i
      LEFT JOIN users c ON c.organization_id = i.organization_id AND c.id = i.commander_id
      JOIN users cb ON cb.organization_id = i.organization_id AND cb.id = i.created_by";

const SELECT_EVENTS: &str = "
    SELECT e.id, e.at, e.kind, e.body,
           CASE WHEN u.id IS NULL THEN NULL
                ELSE json_build_object('id', u.id, 'name', u.name, 'email', u.email) END AS author
      FROM incident_events e
      LEFT JOIN users u ON u.organization_id = e.organization_id AND u.id = e.author_id";

impl NewIncident {
    fn validate(&self) -> Result<(), DomainError> {
        let title = self.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE {
            return Err(DomainError::invalid("title", "must be 1 to 200 characters"));
        }
        refuse_nul("title", title)?;
        if self.summary.chars().count() > MAX_TEXT {
            return Err(DomainError::invalid(
                "summary",
                "must be at most 10000 characters",
            ));
        }
        refuse_nul("summary", &self.summary)?;
        if self.service_ids.len() > MAX_LINKED {
            return Err(DomainError::invalid("service_ids", "at most 50 services"));
        }
        if self.alert_ids.len() > MAX_LINKED {
            return Err(DomainError::invalid("alert_ids", "at most 50 alerts"));
        }
        Ok(())
    }
}

/// Checks a note's text; `field` names it for the client (`body` of a note, `note` of a resolution).
/// The request types document this as 1 to 10000 characters and the pattern
/// `^[^\u0000]*[^WS\u0000][^\u0000]*$` (WS: the whitespace that `str::trim` removes).
fn validate_note(field: &str, text: &str) -> Result<(), DomainError> {
    if text.trim().is_empty() || text.chars().count() > MAX_TEXT {
        return Err(DomainError::invalid(field, "must be 1 to 10000 characters"));
    }
    refuse_nul(field, text)
}

/// PostgreSQL text cannot hold NUL characters; refuse them before they reach the database.
fn refuse_nul(field: &str, text: &str) -> Result<(), DomainError> {
    if text.contains('\0') {
        return Err(DomainError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

impl Tenant {
    /// Incidents matching `filter`, newest first.
    pub async fn list_incidents(
        &self,
        filter: &IncidentFilter,
        page: &PageRequest,
    ) -> Result<Page<Incident>, DomainError> {
        let (before_at, before_id) = page.before_time_and_id()?;
        let rows: Vec<Incident> = sqlx::query_as(&format!(
            "{SELECT_INCIDENTS}
             WHERE i.organization_id = $1
               AND (i.opened_at, i.id) < ($2, $3)
               AND ($4::incident_status IS NULL OR i.status = $4)
               AND ($5::severity IS NULL OR i.severity = $5)
               AND ($6::uuid IS NULL OR EXISTS (
                       SELECT 1 FROM incident_services isv
                        WHERE isv.organization_id = i.organization_id AND isv.incident_id = i.id
                          AND isv.service_id = $6))
               AND ($7::timestamptz IS NULL OR i.opened_at >= $7)
               AND ($8::timestamptz IS NULL OR i.opened_at < $8)
             ORDER BY i.opened_at DESC, i.id DESC
             LIMIT $9"
        ))
        .bind(self.organization_id())
        .bind(before_at)
        .bind(before_id)
        .bind(filter.status)
        .bind(filter.severity)
        .bind(filter.service_id)
        .bind(filter.since)
        .bind(filter.until)
        .bind(page.fetch_limit())
        .fetch_all(&self.db)
        .await?;
        Ok(page.finish(rows, |incident| {
            time_and_id_key(incident.opened_at, incident.id)
        }))
    }

    /// One incident with its alerts and timeline.
    pub async fn incident(&self, id: Uuid) -> Result<IncidentDetail, DomainError> {
        let incident: Incident = sqlx::query_as(&format!(
            "{SELECT_INCIDENTS} WHERE i.organization_id = $1 AND i.id = $2"
        ))
        .bind(self.organization_id())
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| incident_not_found(id))?;
        let alerts = sqlx::query_as(&format!(
            "{SELECT_ALERTS} WHERE a.organization_id = $1 AND a.incident_id = $2 ORDER BY a.started_at"
        ))
        .bind(self.organization_id())
        .bind(id)
        .fetch_all(&self.db)
        .await?;
        let timeline = sqlx::query_as(&format!(
            "{SELECT_EVENTS} WHERE e.organization_id = $1 AND e.incident_id = $2 ORDER BY e.at, e.id"
        ))
        .bind(self.organization_id())
        .bind(id)
        .fetch_all(&self.db)
        .await?;
        Ok(IncidentDetail {
            incident,
            alerts,
            timeline,
        })
    }

    /// One incident by its per-organisation number (the 42 of INC-42), with its alerts and
    /// timeline. One indexed lookup (`UNIQUE (organization_id, number)`), never a scan.
    pub async fn incident_by_number(&self, number: i32) -> Result<IncidentDetail, DomainError> {
        let id: Uuid = sqlx::query_scalar(
            "SELECT id FROM incidents WHERE organization_id = $1 AND number = $2",
        )
        .bind(self.organization_id())
        .bind(number)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("no incident INC-{number}")))?;
        self.incident(id).await
    }

    /// Opens an incident, linking services and alerts. With an idempotency key, a retry of the
    /// same request returns the incident the first one created.
    pub async fn create_incident(
        &self,
        input: &NewIncident,
        idempotency_key: Option<&str>,
    ) -> Result<Created<IncidentDetail>, DomainError> {
        input.validate()?;
        let mut transaction = self.db.begin().await?;
        let id = Uuid::now_v7();
        if let Some(key) = idempotency_key {
            let claim = self
                .claim_idempotency_key(
                    &mut transaction,
                    key,
                    fingerprint("create_incident", input),
                    id,
                )
                .await?;
            if let Claim::Replay(existing) = claim {
                transaction.rollback().await?;
                return Ok(Created {
                    resource: self.incident(existing).await?,
                    replayed: true,
                });
            }
        }
        let connection = transaction.acquire().await?;
        self.ensure_services_exist_on(&mut *connection, &input.service_ids)
            .await?;
        if let Some(commander_id) = input.commander_id {
            self.check_user(connection, commander_id, "commander_id")
                .await?;
        }
        let number: i32 = sqlx::query_scalar(
            "UPDATE organizations SET next_incident_number = next_incident_number + 1
              WHERE id = $1 RETURNING next_incident_number - 1",
        )
        .bind(self.organization_id())
        .fetch_one(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO incidents (id, organization_id, number, title, summary, severity, commander_id, created_by, opened_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())",
        )
        .bind(id)
        .bind(self.organization_id())
        .bind(number)
        .bind(input.title.trim())
        .bind(&input.summary)
        .bind(input.severity)
        .bind(input.commander_id)
        .bind(self.actor_id())
        .execute(&mut *connection)
        .await?;
        sqlx::query(
            "INSERT INTO incident_services (organization_id, incident_id, service_id)
             SELECT $1, $2, unnest($3::uuid[]) ON CONFLICT DO NOTHING",
        )
        .bind(self.organization_id())
        .bind(id)
        .bind(&input.service_ids)
        .execute(&mut *connection)
        .await?;
        self.record_event(connection, id, "opened", input.title.trim())
            .await?;
        for &alert_id in &input.alert_ids {
            self.link_alert_locked(connection, id, alert_id).await?;
        }
        transaction.commit().await?;
        Ok(Created {
            resource: self.incident(id).await?,
            replayed: false,
        })
    }

    /// Acknowledges or resolves an incident; an illegal transition is a [`DomainError::Conflict`].
    /// `note`, if given, is recorded in the timeline entry (e.g. how it was resolved).
    pub async fn transition_incident(
        &self,
        id: Uuid,
        transition: Transition,
        note: Option<&str>,
    ) -> Result<IncidentDetail, DomainError> {
        if let Some(note) = note {
            validate_note("note", note)?;
        }
        let mut transaction = self.db.begin().await?;
        let current = self.lock_incident(&mut transaction, id).await?;
        let next = transition.apply(current)?;
        sqlx::query(
            "UPDATE incidents
                SET status = $3,
                    acknowledged_at = CASE WHEN $3 = 'acknowledged' THEN now() ELSE acknowledged_at END,
                    resolved_at = CASE WHEN $3 = 'resolved' THEN now() ELSE resolved_at END
              WHERE organization_id = $1 AND id = $2",
        )
        .bind(self.organization_id())
        .bind(id)
        .bind(next)
        .execute(&mut *transaction)
        .await?;
        self.record_event(
            &mut transaction,
            id,
            transition.event_kind(),
            note.unwrap_or_default(),
        )
        .await?;
        transaction.commit().await?;
        self.incident(id).await
    }

    /// Adds a note to an incident's timeline (resolved incidents too: postmortem notes).
    pub async fn add_incident_note(
        &self,
        id: Uuid,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Created<TimelineEvent>, DomainError> {
        validate_note("body", body)?;
        let mut transaction = self.db.begin().await?;
        self.lock_incident(&mut transaction, id).await?;
        let event_id = Uuid::now_v7();
        if let Some(key) = idempotency_key {
            let request = (id, body);
            let claim = self
                .claim_idempotency_key(
                    &mut transaction,
                    key,
                    fingerprint("add_incident_note", &request),
                    event_id,
                )
                .await?;
            if let Claim::Replay(existing) = claim {
                transaction.rollback().await?;
                return Ok(Created {
                    resource: self.timeline_event(existing).await?,
                    replayed: true,
                });
            }
        }
        self.insert_event(&mut transaction, event_id, id, "note", body)
            .await?;
        transaction.commit().await?;
        Ok(Created {
            resource: self.timeline_event(event_id).await?,
            replayed: false,
        })
    }

    /// Links an alert to an incident. Linking an alert already linked to this incident changes
    /// nothing; one linked to another incident is a conflict.
    pub async fn link_alert(
        &self,
        id: Uuid,
        alert_id: Uuid,
    ) -> Result<IncidentDetail, DomainError> {
        let mut transaction = self.db.begin().await?;
        let status = self.lock_incident(&mut transaction, id).await?;
        if status == IncidentStatus::Resolved {
            return Err(DomainError::Conflict(
                "the incident is resolved; open a new incident for new alerts".into(),
            ));
        }
        self.link_alert_locked(&mut transaction, id, alert_id)
            .await?;
        transaction.commit().await?;
        self.incident(id).await
    }

    async fn link_alert_locked(
        &self,
        connection: &mut PgConnection,
        incident_id: Uuid,
        alert_id: Uuid,
    ) -> Result<(), DomainError> {
        let alert: Option<(Option<Uuid>, String, Uuid)> = sqlx::query_as(
            "SELECT incident_id, summary, service_id FROM alerts
              WHERE organization_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(self.organization_id())
        .bind(alert_id)
        .fetch_optional(&mut *connection)
        .await?;
        let Some((linked_to, summary, service_id)) = alert else {
            return Err(DomainError::NotFound(format!(
                "no alert with id {alert_id}"
            )));
        };
        match linked_to {
            Some(existing) if existing == incident_id => return Ok(()),
            Some(other) => {
                return Err(DomainError::Conflict(format!(
                    "alert {alert_id} is already linked to another incident ({other})"
                )));
            }
            None => {}
        }
        sqlx::query("UPDATE alerts SET incident_id = $3 WHERE organization_id = $1 AND id = $2")
            .bind(self.organization_id())
            .bind(alert_id)
            .bind(incident_id)
            .execute(&mut *connection)
            .await?;
        // The alert's service is affected by the incident too.
        sqlx::query(
            "INSERT INTO incident_services (organization_id, incident_id, service_id)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(self.organization_id())
        .bind(incident_id)
        .bind(service_id)
        .execute(&mut *connection)
        .await?;
        self.record_event(connection, incident_id, "alert_linked", &summary)
            .await
    }

    /// Locks the incident row for the rest of the transaction and returns its status.
    async fn lock_incident(
        &self,
        connection: &mut PgConnection,
        id: Uuid,
    ) -> Result<IncidentStatus, DomainError> {
        sqlx::query_scalar(
            "SELECT status FROM incidents WHERE organization_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(self.organization_id())
        .bind(id)
        .fetch_optional(connection)
        .await?
        .ok_or_else(|| incident_not_found(id))
    }

    async fn record_event(
        &self,
        connection: &mut PgConnection,
        incident_id: Uuid,
        kind: &str,
        body: &str,
    ) -> Result<(), DomainError> {
        self.insert_event(connection, Uuid::now_v7(), incident_id, kind, body)
            .await
    }

    async fn insert_event(
        &self,
        connection: &mut PgConnection,
        event_id: Uuid,
        incident_id: Uuid,
        kind: &str,
        body: &str,
    ) -> Result<(), DomainError> {
        sqlx::query(
            "INSERT INTO incident_events (id, organization_id, incident_id, at, kind, author_id, body)
             VALUES ($1, $2, $3, clock_timestamp(), $4, $5, $6)",
        )
        .bind(event_id)
        .bind(self.organization_id())
        .bind(incident_id)
        .bind(kind)
        .bind(self.actor_id())
        .bind(body)
        .execute(connection)
        .await?;
        Ok(())
    }

    async fn timeline_event(&self, id: Uuid) -> Result<TimelineEvent, DomainError> {
        sqlx::query_as(&format!(
            "{SELECT_EVENTS} WHERE e.organization_id = $1 AND e.id = $2"
        ))
        .bind(self.organization_id())
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .ok_or_else(|| DomainError::NotFound(format!("no timeline event with id {id}")))
    }

    async fn check_user(
        &self,
        connection: &mut PgConnection,
        id: Uuid,
        field: &str,
    ) -> Result<(), DomainError> {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM users WHERE organization_id = $1 AND id = $2)",
        )
        .bind(self.organization_id())
        .bind(id)
        .fetch_one(connection)
        .await?;
        if !exists {
            return Err(DomainError::NotFound(format!(
                "{field}: no user with id {id}"
            )));
        }
        Ok(())
    }
}

fn incident_not_found(id: Uuid) -> DomainError {
    DomainError::NotFound(format!("no incident with id {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use IncidentStatus::{Acknowledged, Open, Resolved};

    fn check(transition: Transition, from: IncidentStatus, expected: Option<IncidentStatus>) {
        assert_eq!(
            transition.apply(from).ok(),
            expected,
            "{transition:?} from {from:?}"
        );
    }

    #[test]
    fn only_forward_transitions_are_legal() {
        check(Transition::Acknowledge, Open, Some(Acknowledged));
        check(Transition::Acknowledge, Acknowledged, None);
        check(Transition::Acknowledge, Resolved, None);
        check(Transition::Resolve, Open, Some(Resolved));
        check(Transition::Resolve, Acknowledged, Some(Resolved));
        check(Transition::Resolve, Resolved, None);
    }
}
