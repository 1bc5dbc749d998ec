//! The product's closed vocabularies, mapped one to one onto PostgreSQL enum types.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a user may do in their organisation. Token scopes are bounded by the role.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    ToSchema,
)]
#[sqlx(type_name = "user_role", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything in the organisation.
    Viewer,
    /// Also opens, acknowledges and resolves incidents and acts on alerts.
    Responder,
    /// Also manages tokens and monitors.
    Admin,
}

/// How critical a service is; tier 1 is customer facing and paged first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "service_tier", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[serde(rename = "tier_1")]
    #[sqlx(rename = "tier_1")]
    Tier1,
    #[serde(rename = "tier_2")]
    #[sqlx(rename = "tier_2")]
    Tier2,
    #[serde(rename = "tier_3")]
    #[sqlx(rename = "tier_3")]
    Tier3,
}

/// Severity of alerts, monitors and incidents, most severe first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    ToSchema,
)]
#[sqlx(type_name = "severity", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

/// Whether an alert's condition still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "alert_state", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// Where an incident is in its lifecycle; see [`crate::domain::incidents::Transition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "incident_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Acknowledged,
    Resolved,
}

/// Outcome of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "deployment_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    InProgress,
    Succeeded,
    Failed,
    RolledBack,
}

/// Which side of a monitor's threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, ToSchema)]
#[sqlx(type_name = "comparison", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Above,
    Below,
}

/// What an API token allows, in increasing power; `admin` implies `write`, which implies `read`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    /// The most a user of `role` may be granted.
    pub fn highest_for(role: Role) -> Scope {
        match role {
            Role::Viewer => Scope::Read,
            Role::Responder => Scope::Write,
            Role::Admin => Scope::Admin,
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| format!("unknown scope `{text}`; expected read, write or admin"))
    }
}

/// The metrics every service reports, with their units.
pub const STANDARD_METRICS: [(&str, &str, &str); 5] = [
    (
        "latency_p50_ms",
        "ms",
        "Median request latency over the minute, in milliseconds.",
    ),
    (
        "latency_p95_ms",
        "ms",
        "95th percentile request latency over the minute, in milliseconds.",
    ),
    (
        "error_rate",
        "ratio",
        "Share of requests that failed (5xx), from 0 to 1.",
    ),
    (
        "request_rate",
        "rps",
        "Requests per second, averaged over the minute.",
    ),
    (
        "cpu_utilization",
        "ratio",
        "CPU in use as a share of the allocation, from 0 to 1 (may exceed 1 when bursting).",
    ),
];
