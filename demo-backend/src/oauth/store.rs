//! What the authorization server keeps in PostgreSQL (migration 0004): authorization requests,
//! codes, grants and their token families, registered clients. Secrets are stored as SHA-256
//! digests only; every multi-step change runs in one transaction with its rows locked.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::Secret;
use crate::domain::kinds::{Role, Scope};
use crate::domain::tokens::{self, Principal};

/// OAuth access tokens start with this (API tokens with `dmo_`), so each is recognised at once.
pub const ACCESS_TOKEN_PREFIX: &str = "dmoat_";
pub const REFRESH_TOKEN_PREFIX: &str = "dmort_";
pub const AUTHORIZATION_CODE_PREFIX: &str = "dmoac_";
pub const CLIENT_SECRET_PREFIX: &str = "dmocs_";
pub const CLIENT_ID_PREFIX: &str = "dmoc_";

/// A random secret with `prefix` (256 bits from the OS) and the digest that is stored.
pub fn new_secret(prefix: &str) -> (Secret, [u8; 32]) {
    let generated = tokens::generate();
    let secret = format!(
        "{prefix}{}",
        &generated.secret.expose()[tokens::TOKEN_PREFIX.len()..]
    );
    let digest = tokens::hash(&secret);
    (Secret::new(secret), digest)
}

/// The most an OAuth token may hold for a user of `role`: `write` at most (admin work needs an
/// API token made on purpose).
pub fn ceiling_for(role: Role) -> Scope {
    Scope::highest_for(role).min(Scope::Write)
}

pub fn scope_names(scopes: &[Scope]) -> Vec<&'static str> {
    scopes.iter().map(|scope| scope.as_str()).collect()
}

fn parse_scopes(names: &[String]) -> Vec<Scope> {
    names.iter().filter_map(|name| name.parse().ok()).collect()
}

/// An authorization request waiting for sign-in and consent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuthorizationRequest {
    pub id: Uuid,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub code_challenge: String,
    pub resource: String,
    pub scopes: Vec<String>,
    pub browser_binding_hash: Vec<u8>,
    pub csrf_token_hash: Vec<u8>,
    pub organization_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
}

/// A new authorization request's validated parameters.
#[derive(Debug)]
pub struct NewAuthorizationRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub code_challenge: &'a str,
    pub resource: &'a str,
    pub scopes: &'a [Scope],
    pub browser_binding_hash: [u8; 32],
    pub csrf_token_hash: [u8; 32],
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_request(
    db: &PgPool,
    request: &NewAuthorizationRequest<'_>,
) -> sqlx::Result<Uuid> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO oauth_authorization_requests
             (id, client_id, redirect_uri, state, code_challenge, resource, scopes,
              browser_binding_hash, csrf_token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(request.client_id)
    .bind(request.redirect_uri)
    .bind(request.state)
    .bind(request.code_challenge)
    .bind(request.resource)
    .bind(scope_names(request.scopes))
    .bind(&request.browser_binding_hash[..])
    .bind(&request.csrf_token_hash[..])
    .bind(request.expires_at)
    .execute(db)
    .await?;
    Ok(id)
}

/// The request, while it is neither expired nor answered.
pub async fn open_request(db: &PgPool, id: Uuid) -> sqlx::Result<Option<AuthorizationRequest>> {
    sqlx::query_as(
        "SELECT id, client_id, redirect_uri, state, code_challenge, resource, scopes,
                browser_binding_hash, csrf_token_hash, organization_id, user_id
           FROM oauth_authorization_requests
          WHERE id = $1 AND completed_at IS NULL AND expires_at > now()",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Records who signed in, with the consent form's new anti-CSRF token.
pub async fn record_sign_in(
    db: &PgPool,
    id: Uuid,
    organization_id: Uuid,
    user_id: Uuid,
    csrf_token_hash: [u8; 32],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE oauth_authorization_requests
            SET organization_id = $2, user_id = $3, csrf_token_hash = $4
          WHERE id = $1 AND completed_at IS NULL",
    )
    .bind(id)
    .bind(organization_id)
    .bind(user_id)
    .bind(&csrf_token_hash[..])
    .execute(db)
    .await?;
    Ok(())
}

/// Marks the request answered; false when it already was (or expired meanwhile).
pub async fn complete_request(db: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE oauth_authorization_requests SET completed_at = now()
          WHERE id = $1 AND completed_at IS NULL AND expires_at > now()",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The role of a member of an organisation.
pub async fn role_of(
    db: &PgPool,
    organization_id: Uuid,
    user_id: Uuid,
) -> sqlx::Result<Option<Role>> {
    sqlx::query_scalar("SELECT role FROM users WHERE organization_id = $1 AND id = $2")
        .bind(organization_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// What a code was issued for.
#[derive(Debug)]
pub struct NewCode<'a> {
    pub request: &'a AuthorizationRequest,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub scopes: &'a [Scope],
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_code(db: &PgPool, code: &NewCode<'_>) -> sqlx::Result<Secret> {
    let (secret, digest) = new_secret(AUTHORIZATION_CODE_PREFIX);
    sqlx::query(
        "INSERT INTO oauth_authorization_codes
             (code_hash, client_id, redirect_uri, code_challenge, organization_id, user_id, resource,
              scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&digest[..])
    .bind(&code.request.client_id)
    .bind(&code.request.redirect_uri)
    .bind(&code.request.code_challenge)
    .bind(code.organization_id)
    .bind(code.user_id)
    .bind(&code.request.resource)
    .bind(scope_names(code.scopes))
    .bind(code.expires_at)
    .execute(db)
    .await?;
    Ok(secret)
}

/// A code row, locked for redemption.
#[derive(Debug, sqlx::FromRow)]
pub struct CodeRow {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub resource: String,
    pub scopes: Vec<String>,
    pub live: bool,
    pub redeemed: bool,
    pub grant_id: Option<Uuid>,
    pub role: Role,
}

pub async fn lock_code(connection: &mut PgConnection, code: &str) -> sqlx::Result<Option<CodeRow>> {
    if !code.starts_with(AUTHORIZATION_CODE_PREFIX) || code.len() > 200 {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT c.client_id, c.redirect_uri, c.code_challenge, c.organization_id, c.user_id,
                c.resource, c.scopes, c.expires_at > now() AS live,
                c.redeemed_at IS NOT NULL AS redeemed, c.grant_id, u.role
           FROM oauth_authorization_codes c
           JOIN users u ON u.organization_id = c.organization_id AND u.id = c.user_id
          WHERE c.code_hash = $1
            FOR UPDATE OF c",
    )
    .bind(&tokens::hash(code)[..])
    .fetch_optional(connection)
    .await
}

pub async fn mark_code_redeemed(
    connection: &mut PgConnection,
    code: &str,
    grant_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE oauth_authorization_codes SET redeemed_at = now(), grant_id = $2 WHERE code_hash = $1")
        .bind(&tokens::hash(code)[..])
        .bind(grant_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// A new grant (one consent, one token family).
pub async fn create_grant(
    connection: &mut PgConnection,
    client_id: &str,
    organization_id: Uuid,
    user_id: Uuid,
    resource: &str,
    scopes: &[Scope],
) -> sqlx::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO oauth_grants (id, client_id, organization_id, user_id, resource, scopes)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(client_id)
    .bind(organization_id)
    .bind(user_id)
    .bind(resource)
    .bind(scope_names(scopes))
    .execute(connection)
    .await?;
    Ok(id)
}

/// Revokes a grant, and with it every token of its family.
pub async fn revoke_grant(
    connection: &mut PgConnection,
    grant_id: Uuid,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE oauth_grants SET revoked_at = now(), revoked_reason = $2
          WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(grant_id)
    .bind(reason)
    .execute(connection)
    .await?;
    tracing::info!(grant = %grant_id, reason, "OAuth grant revoked");
    Ok(())
}

/// An access token to issue.
#[derive(Debug)]
pub struct NewAccessToken<'a> {
    pub grant_id: Uuid,
    pub exchanged_from: Option<Uuid>,
    pub client_id: &'a str,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub resource: &'a str,
    pub scopes: &'a [Scope],
    pub expires_at: DateTime<Utc>,
}

pub async fn issue_access_token(
    connection: &mut PgConnection,
    token: &NewAccessToken<'_>,
) -> sqlx::Result<Secret> {
    let (secret, digest) = new_secret(ACCESS_TOKEN_PREFIX);
    sqlx::query(
        "INSERT INTO oauth_access_tokens
             (id, token_hash, grant_id, exchanged_from, client_id, organization_id, user_id,
              resource, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(Uuid::now_v7())
    .bind(&digest[..])
    .bind(token.grant_id)
    .bind(token.exchanged_from)
    .bind(token.client_id)
    .bind(token.organization_id)
    .bind(token.user_id)
    .bind(token.resource)
    .bind(scope_names(token.scopes))
    .bind(token.expires_at)
    .execute(connection)
    .await?;
    Ok(secret)
}

pub async fn issue_refresh_token(
    connection: &mut PgConnection,
    grant_id: Uuid,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<Secret> {
    let (secret, digest) = new_secret(REFRESH_TOKEN_PREFIX);
    sqlx::query(
        "INSERT INTO oauth_refresh_tokens (id, token_hash, grant_id, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(&digest[..])
    .bind(grant_id)
    .bind(expires_at)
    .execute(connection)
    .await?;
    Ok(secret)
}

/// A refresh token with its grant, locked for rotation.
#[derive(Debug, sqlx::FromRow)]
pub struct RefreshRow {
    pub id: Uuid,
    pub grant_id: Uuid,
    pub used: bool,
    pub live: bool,
    pub client_id: String,
    pub grant_revoked: bool,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub resource: String,
    pub scopes: Vec<String>,
    pub role: Role,
}

pub async fn lock_refresh_token(
    connection: &mut PgConnection,
    token: &str,
) -> sqlx::Result<Option<RefreshRow>> {
    if !token.starts_with(REFRESH_TOKEN_PREFIX) || token.len() > 200 {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT r.id, r.grant_id, r.used_at IS NOT NULL AS used, r.expires_at > now() AS live,
                g.client_id, g.revoked_at IS NOT NULL AS grant_revoked, g.organization_id,
                g.user_id, g.resource, g.scopes, u.role
           FROM oauth_refresh_tokens r
           JOIN oauth_grants g ON g.id = r.grant_id
           JOIN users u ON u.organization_id = g.organization_id AND u.id = g.user_id
          WHERE r.token_hash = $1
            FOR UPDATE OF r, g",
    )
    .bind(&tokens::hash(token)[..])
    .fetch_optional(connection)
    .await
}

pub async fn mark_refresh_token_used(connection: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE oauth_refresh_tokens SET used_at = now() WHERE id = $1")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}

/// An active access token: not expired, not revoked, its grant not revoked.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveAccessToken {
    pub id: Uuid,
    pub grant_id: Uuid,
    pub client_id: String,
    pub organization_id: Uuid,
    pub organization_slug: String,
    pub organization_name: String,
    pub user_id: Uuid,
    pub user_email: String,
    pub user_name: String,
    pub role: Role,
    pub resource: String,
    #[sqlx(rename = "scopes")]
    stored_scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
    pub issued_at: DateTime<Utc>,
}

impl ActiveAccessToken {
    /// The token's scopes, narrowed to what the user's role allows today.
    pub fn scopes(&self) -> Vec<Scope> {
        let ceiling = ceiling_for(self.role);
        parse_scopes(&self.stored_scopes)
            .into_iter()
            .filter(|&scope| scope <= ceiling)
            .collect()
    }

    /// The caller, for the REST API.
    pub fn principal(&self) -> Principal {
        Principal {
            token_id: self.id,
            organization_id: self.organization_id,
            organization_slug: self.organization_slug.clone(),
            organization_name: self.organization_name.clone(),
            user_id: self.user_id,
            user_email: self.user_email.clone(),
            user_name: self.user_name.clone(),
            role: self.role,
            scopes: self.scopes(),
            expires_at: Some(self.expires_at),
        }
    }
}

pub async fn active_access_token(
    db: &PgPool,
    presented: &str,
) -> sqlx::Result<Option<ActiveAccessToken>> {
    if !presented.starts_with(ACCESS_TOKEN_PREFIX) || presented.len() > 200 {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT a.id, a.grant_id, a.client_id, a.organization_id, o.slug AS organization_slug,
                o.name AS organization_name, a.user_id, u.email AS user_email, u.name AS user_name,
                u.role, a.resource, a.scopes, a.expires_at, a.created_at AS issued_at
           FROM oauth_access_tokens a
           JOIN oauth_grants g ON g.id = a.grant_id
           JOIN users u ON u.organization_id = a.organization_id AND u.id = a.user_id
           JOIN organizations o ON o.id = a.organization_id
          WHERE a.token_hash = $1
            AND a.revoked_at IS NULL
            AND g.revoked_at IS NULL
            AND a.expires_at > now()",
    )
    .bind(&tokens::hash(presented)[..])
    .fetch_optional(db)
    .await
}

/// Revokes an access token held by `client_id`, and the tokens exchanged from it.
pub async fn revoke_access_token(
    db: &PgPool,
    presented: &str,
    client_id: &str,
) -> sqlx::Result<u64> {
    let revoked = sqlx::query(
        "WITH target AS (
             SELECT id FROM oauth_access_tokens WHERE token_hash = $1 AND client_id = $2
         )
         UPDATE oauth_access_tokens SET revoked_at = now()
          WHERE revoked_at IS NULL
            AND (id IN (SELECT id FROM target) OR exchanged_from IN (SELECT id FROM target))",
    )
    .bind(&tokens::hash(presented)[..])
    .bind(client_id)
    .execute(db)
    .await?;
    Ok(revoked.rows_affected())
}

/// Revokes the grant of a refresh token held by `client_id` (the whole family).
pub async fn revoke_refresh_token(
    db: &PgPool,
    presented: &str,
    client_id: &str,
) -> sqlx::Result<()> {
    let mut transaction = db.begin().await?;
    let grant: Option<Uuid> = sqlx::query_scalar(
        "SELECT g.id FROM oauth_refresh_tokens r JOIN oauth_grants g ON g.id = r.grant_id
          WHERE r.token_hash = $1 AND g.client_id = $2",
    )
    .bind(&tokens::hash(presented)[..])
    .bind(client_id)
    .fetch_optional(&mut *transaction)
    .await?;
    if let Some(grant) = grant {
        revoke_grant(&mut transaction, grant, "revoked by the client").await?;
    }
    transaction.commit().await
}

/// A client registered through Dynamic Client Registration.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegisteredClientRow {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub client_secret_hash: Option<Vec<u8>>,
}

pub async fn registered_client(
    db: &PgPool,
    client_id: &str,
) -> sqlx::Result<Option<RegisteredClientRow>> {
    if !client_id.starts_with(CLIENT_ID_PREFIX) || client_id.len() > 100 {
        return Ok(None);
    }
    sqlx::query_as(
        "SELECT client_id, client_name, redirect_uris, token_endpoint_auth_method, client_secret_hash
           FROM oauth_clients WHERE client_id = $1",
    )
    .bind(client_id)
    .fetch_optional(db)
    .await
}

pub async fn insert_registered_client(
    db: &PgPool,
    client: &RegisteredClientRow,
) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar(
        "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, token_endpoint_auth_method, client_secret_hash)
         VALUES ($1, $2, $3, $4, $5) RETURNING registered_at",
    )
    .bind(&client.client_id)
    .bind(&client.client_name)
    .bind(&client.redirect_uris)
    .bind(&client.token_endpoint_auth_method)
    .bind(&client.client_secret_hash)
    .fetch_one(db)
    .await
}

/// Replaces the request's anti-CSRF token (each page shows a new one).
pub async fn record_csrf(db: &PgPool, id: Uuid, csrf_token_hash: [u8; 32]) -> sqlx::Result<()> {
    sqlx::query("UPDATE oauth_authorization_requests SET csrf_token_hash = $2 WHERE id = $1 AND completed_at IS NULL")
        .bind(id)
        .bind(&csrf_token_hash[..])
        .execute(db)
        .await?;
    Ok(())
}
