//! Idempotency keys for creating requests: the first request with a key creates, a retry with the
//! same key and the same request gets the same resource back, and the key reused for a different
//! request is refused.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{DomainError, Tenant};

/// The longest key accepted.
pub const MAX_KEY_LENGTH: usize = 255;

/// What a key says about the request at hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The key is new: go on and create the resource with the id the key now points to.
    Fresh,
    /// The same request was made before with this key: this is the resource it created.
    Replay(Uuid),
}

/// A digest of what is being asked, to tell a retry from a different request under the same key.
pub(crate) fn fingerprint(operation: &str, input: &impl Serialize) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(operation.as_bytes());
    digest.update([0]);
    digest.update(serde_json::to_vec(input).unwrap_or_default());
    digest.finalize().into()
}

/// Checks a client-supplied key: 1 to 255 visible ASCII characters.
pub fn validate_key(key: &str) -> Result<(), DomainError> {
    let visible = key.bytes().all(|byte| byte.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_KEY_LENGTH || !visible {
        return Err(DomainError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters, e.g. a UUID",
        ));
    }
    Ok(())
}

impl Tenant {
    /// Claims `key` for a resource about to be created with `resource_id`, inside the creating
    /// transaction. A concurrent request with the same key waits on the row lock until this
    /// transaction ends, then sees its result, so two retries racing never both create.
    pub(crate) async fn claim_idempotency_key(
        &self,
        connection: &mut PgConnection,
        key: &str,
        fingerprint: [u8; 32],
        resource_id: Uuid,
    ) -> Result<Claim, DomainError> {
        validate_key(key)?;
        // Keys live 24 hours; an expired one is forgotten the next time it is presented.
        sqlx::query(
            "DELETE FROM idempotency_keys
              WHERE organization_id = $1 AND user_id = $2 AND key = $3
                AND created_at < now() - interval '24 hours'",
        )
        .bind(self.organization_id())
        .bind(self.actor_id())
        .bind(key)
        .execute(&mut *connection)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (organization_id, user_id, key, request_fingerprint, resource_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(self.organization_id())
        .bind(self.actor_id())
        .bind(key)
        .bind(&fingerprint[..])
        .bind(resource_id)
        .execute(&mut *connection)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(Claim::Fresh);
        }
        let (stored_fingerprint, stored_resource): (Vec<u8>, Uuid) = sqlx::query_as(
            "SELECT request_fingerprint, resource_id FROM idempotency_keys
              WHERE organization_id = $1 AND user_id = $2 AND key = $3",
        )
        .bind(self.organization_id())
        .bind(self.actor_id())
        .bind(key)
        .fetch_one(&mut *connection)
        .await?;
        if stored_fingerprint != fingerprint {
            return Err(DomainError::invalid(
                "Idempotency-Key",
                "this key was already used for a different request; use a new key for a new request",
            ));
        }
        Ok(Claim::Replay(stored_resource))
    }
}
