//! The domain layer: types, lifecycle rules and storage queries, with no HTTP in sight.
//!
//! Tenant data is reached only through a [`Tenant`], which carries the organisation every query is
//! scoped by; the REST API builds one from a token, the internal MCP server from its service
//! credential. The lifecycle rules (which incident transitions are legal, what an acknowledgement
//! records) live here, so every caller gets the same invariants.

pub mod alerts;
pub mod deployments;
pub mod idempotency;
pub mod incidents;
pub mod kinds;
pub mod metrics;
pub mod monitors;
pub mod page;
pub mod passwords;
pub mod services;
pub mod tokens;

use sqlx::PgPool;
use uuid::Uuid;

/// Everything the domain layer can refuse, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The resource does not exist in the caller's organisation (it may exist in another; we never
    /// say so).
    #[error("{0}")]
    NotFound(String),
    /// The request is well formed but the resource's state forbids it (an illegal transition).
    #[error("{0}")]
    Conflict(String),
    /// A field's value is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A secret string (a token) that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself, for the one place that must hand it over.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(..)")
    }
}

/// The only door to an organisation's data: every query made through it is scoped by
/// `organization_id`, and the acting user is recorded on every change.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub(crate) db: PgPool,
    organization_id: Uuid,
    actor_id: Uuid,
}

impl Tenant {
    /// Scopes `db` to an organisation, acting as `actor_id`. The caller must have authenticated
    /// the actor as a member of that organisation.
    pub fn new(db: PgPool, organization_id: Uuid, actor_id: Uuid) -> Self {
        Self {
            db,
            organization_id,
            actor_id,
        }
    }

    pub fn organization_id(&self) -> Uuid {
        self.organization_id
    }

    pub fn actor_id(&self) -> Uuid {
        self.actor_id
    }
}
