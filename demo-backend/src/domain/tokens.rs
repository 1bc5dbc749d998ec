//! API tokens: generation, hashing and lookup. A token is shown once; only its SHA-256 is stored.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::kinds::{Role, Scope};
use crate::domain::{DomainError, Secret};

/// Every token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "dmo_";

/// A freshly generated token: the secret for its owner, and what the database keeps.
#[derive(Debug)]
pub struct GeneratedToken {
    pub secret: Secret,
    pub hash: [u8; 32],
    /// The first characters of the secret, safe to show in listings.
    pub display_prefix: String,
}

/// Generates a token with 256 bits of entropy from the operating system.
pub fn generate() -> GeneratedToken {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
    let secret = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    GeneratedToken {
        hash: hash(&secret),
        display_prefix: secret[..TOKEN_PREFIX.len() + 6].to_owned(),
        secret: Secret::new(secret),
    }
}

/// The digest stored for a token. Tokens are random and long, so a fast hash is the right one.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Who is calling, as established from a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: Uuid,
    pub organization_id: Uuid,
    pub organization_slug: String,
    pub organization_name: String,
    pub user_id: Uuid,
    pub user_email: String,
    pub user_name: String,
    pub role: Role,
    /// The token's scopes, already narrowed to what the role allows.
    pub scopes: Vec<Scope>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// Whether the token grants `needed`; a higher scope implies the lower ones.
    pub fn has_scope(&self, needed: Scope) -> bool {
        self.scopes.iter().any(|&granted| granted >= needed)
    }
}

/// Resolves a presented token to its principal, or `None` when it is unknown, revoked or expired.
/// Records the use at most once a minute per token, to keep reads cheap.
pub async fn authenticate(db: &PgPool, presented: &str) -> Result<Option<Principal>, DomainError> {
    if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 200 {
        return Ok(None);
    }
    let row: Option<PrincipalRow> = sqlx::query_as(
        "SELECT t.id AS token_id, o.id AS organization_id, o.slug, o.name AS organization_name,
                u.id AS user_id, u.email, u.name AS user_name, u.role, t.scopes, t.expires_at
           FROM api_tokens t
           JOIN users u ON u.organization_id = t.organization_id AND u.id = t.user_id
           JOIN organizations o ON o.id = t.organization_id
          WHERE t.token_hash = $1
            AND t.revoked_at IS NULL
            AND (t.expires_at IS NULL OR t.expires_at > now())",
    )
    .bind(&hash(presented)[..])
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };

    sqlx::query(
        "UPDATE api_tokens SET last_used_at = now()
          WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(row.token_id)
    .execute(db)
    .await?;

    let ceiling = Scope::highest_for(row.role);
    let scopes = row
        .scopes
        .iter()
        .filter_map(|scope| scope.parse::<Scope>().ok())
        .filter(|&scope| scope <= ceiling)
        .collect();
    Ok(Some(Principal {
        token_id: row.token_id,
        organization_id: row.organization_id,
        organization_slug: row.slug,
        organization_name: row.organization_name,
        user_id: row.user_id,
        user_email: row.email,
        user_name: row.user_name,
        role: row.role,
        scopes,
        expires_at: row.expires_at,
    }))
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    token_id: Uuid,
    organization_id: Uuid,
    slug: String,
    organization_name: String,
    user_id: Uuid,
    email: String,
    user_name: String,
    role: Role,
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

/// What to create a token for.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub organization_slug: &'a str,
    pub user_email: &'a str,
    pub name: &'a str,
    pub scopes: &'a [Scope],
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates a token for a user, refusing scopes beyond the user's role. Returns the secret, which
/// is not stored anywhere.
pub async fn create(db: &PgPool, request: NewToken<'_>) -> Result<Secret, DomainError> {
    if request.scopes.is_empty() {
        return Err(DomainError::invalid("scopes", "give at least one scope"));
    }
    let user: Option<(Uuid, Uuid, Role)> = sqlx::query_as(
        "SELECT o.id, u.id, u.role FROM users u JOIN organizations o ON o.id = u.organization_id
          WHERE o.slug = $1 AND u.email = $2",
    )
    .bind(request.organization_slug)
    .bind(request.user_email)
    .fetch_optional(db)
    .await?;
    let Some((organization_id, user_id, role)) = user else {
        return Err(DomainError::NotFound(format!(
            "no user {} in organisation {}",
            request.user_email, request.organization_slug
        )));
    };
    if let Some(&beyond) = request
        .scopes
        .iter()
        .find(|&&scope| scope > Scope::highest_for(role))
    {
        return Err(DomainError::invalid(
            "scopes",
            format!("a {role:?} may not hold the `{}` scope", beyond.as_str()).to_lowercase(),
        ));
    }
    let token = generate();
    let scopes: Vec<&str> = request.scopes.iter().map(|scope| scope.as_str()).collect();
    sqlx::query(
        "INSERT INTO api_tokens (id, organization_id, user_id, name, token_hash, token_prefix, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(organization_id)
    .bind(user_id)
    .bind(request.name)
    .bind(&token.hash[..])
    .bind(&token.display_prefix)
    .bind(&scopes)
    .bind(request.expires_at)
    .execute(db)
    .await?;
    Ok(token.secret)
}
