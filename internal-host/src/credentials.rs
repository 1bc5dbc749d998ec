//! Mints the short-lived credential internal-mcp requires, naming the signed-in user. This is the
//! one place that knows the credential's format (a JWT signed with the host's own Ed25519 key, or
//! with an HS256 key shared with internal-mcp, as internal-mcp's `auth` module verifies them); the
//! model, the page and the logs never see one.
//!
//! The credential's `jti` starts with the turn's correlation id, so internal-mcp's audit rows (which
//! record the `jti`) join the host's turns: `credential_id LIKE '<correlation id>/%'`.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{CredentialKey, ISSUER};
use crate::error::Error;

/// internal-mcp's audience.
pub const AUDIENCE: &str = "internal-mcp";

/// Who a call acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActingUser {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    /// `viewer`, `responder` or `admin`: the role the host grants. internal-mcp caps it by the
    /// user's current role on every call, so a demoted user loses power at once.
    pub role: String,
}

/// Signs credentials for internal-mcp. Cheap to clone.
#[derive(Clone)]
pub struct CredentialMinter {
    key: EncodingKey,
    algorithm: Algorithm,
    /// For EdDSA, the `kid` internal-mcp finds the public key under.
    kid: Option<String>,
    lifetime: Duration,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: Uuid,
    aud: &'a str,
    org: Uuid,
    role: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

impl CredentialMinter {
    pub fn new(key: &CredentialKey, lifetime: Duration) -> Self {
        let (key, algorithm, kid) = match key {
            CredentialKey::Ed25519 { kid, pkcs8_der } => (
                EncodingKey::from_ed_der(pkcs8_der),
                Algorithm::EdDSA,
                Some(kid.clone()),
            ),
            CredentialKey::Shared(secret) => {
                (EncodingKey::from_secret(secret), Algorithm::HS256, None)
            }
        };
        Self {
            key,
            algorithm,
            kid,
            lifetime,
        }
    }

    fn header(&self) -> Header {
        let mut header = Header::new(self.algorithm);
        header.kid.clone_from(&self.kid);
        header
    }

    /// Whether the key signs at all (a key of the wrong kind fails here, at start-up, rather than
    /// on the first question).
    pub(crate) fn check_key(&self) -> Result<(), Error> {
        jsonwebtoken::encode(&self.header(), &serde_json::json!({}), &self.key)
            .map(drop)
            .map_err(|error| Error::Credential(error.to_string()))
    }

    /// A fresh credential for `user`, tagged with `correlation_id`.
    pub fn mint(&self, user: &ActingUser, correlation_id: Uuid) -> Result<String, Error> {
        if !matches!(user.role.as_str(), "viewer" | "responder" | "admin") {
            return Err(Error::Credential(format!("unknown role {:?}", user.role)));
        }
        let issued_at = Utc::now().timestamp();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(600);
        let claims = Claims {
            iss: ISSUER,
            sub: user.user_id,
            aud: AUDIENCE,
            org: user.organization_id,
            role: &user.role,
            iat: issued_at,
            exp: issued_at.saturating_add(lifetime),
            jti: format!("{correlation_id}/{}", Uuid::new_v4()),
        };
        jsonwebtoken::encode(&self.header(), &claims, &self.key)
            .map_err(|error| Error::Credential(error.to_string()))
    }
}

impl std::fmt::Debug for CredentialMinter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("CredentialMinter(..)")
    }
}
