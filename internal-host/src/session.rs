//! Signed-in browser sessions and sign-ins in progress. A session's id is 32 random bytes in an
//! `HttpOnly; SameSite=Lax` cookie (`Secure` over https); only its SHA-256 digest is stored, so the
//! table alone lets nobody in. Each session has a CSRF token that every POST must carry, compared
//! in constant time. The user's role is re-read from the product with the session's refresh token
//! ([`recheck_role`]), under a row lock so two re-reads never spend the same refresh token (the
//! server would take that for theft and end the grant).

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::credentials::ActingUser;
use crate::error::Error;
use crate::sign_in::{Identity, OAuthClient, SignInError};

/// The session cookie.
pub const SESSION_COOKIE: &str = "internal_host_session";
/// The short-lived cookie of a sign-in in progress (between the redirect and the callback).
pub const SIGN_IN_COOKIE: &str = "internal_host_sign_in";
/// How long a sign-in may take at the authorization server.
pub const SIGN_IN_LIFETIME_SECONDS: i64 = 600;

/// A live session, as requests see it.
#[derive(Clone)]
pub struct Session {
    id_digest: Vec<u8>,
    pub user: ActingUser,
    pub email: String,
    pub user_name: String,
    pub organization_name: String,
    /// Every POST of this session carries it.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    pub role_checked_at: DateTime<Utc>,
}

/// A sign-in in progress, found by its cookie.
pub struct PendingSignIn {
    pub state: String,
    pub code_verifier: String,
}

/// Why the role could not be re-read.
#[derive(Debug, thiserror::Error)]
pub enum RoleCheckError {
    /// The product no longer accepts this sign-in: the session is deleted; sign in again.
    #[error("the sign-in has ended: {0}")]
    Ended(String),
    /// The product could not be asked; nothing was decided.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] Error),
}

type SessionRow = (
    Vec<u8>,
    Uuid,
    Uuid,
    String,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

const SESSION_COLUMNS: &str = "id_digest, user_id, organization_id, role, email, user_name, \
     organization_name, csrf_token, expires_at, role_checked_at";

impl Session {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|presented| {
            constant_time_equal(presented.as_bytes(), self.csrf_token.as_bytes())
        })
    }

    fn from_row(row: SessionRow) -> Self {
        let (
            id_digest,
            user_id,
            organization_id,
            role,
            email,
            user_name,
            organization_name,
            csrf_token,
            expires_at,
            role_checked_at,
        ) = row;
        Self {
            id_digest,
            user: ActingUser {
                user_id,
                organization_id,
                role,
            },
            email,
            user_name,
            organization_name,
            csrf_token,
            expires_at,
            role_checked_at,
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Session")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// 32 random bytes, base64url without padding (43 characters).
pub fn random_secret() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| Error::Internal(format!("no randomness from the OS: {error}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 digest that is stored in place of a secret.
pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// The PKCE S256 challenge of `verifier`.
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Byte strings compared without an early exit.
pub fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// The value of cookie `name` in the request, if any.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    );
    // Names and values are base64url or fixed strings: always a valid header.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Stores a sign-in in progress; returns the cookie secret.
pub async fn begin_sign_in(
    database: &PgPool,
    state: &str,
    code_verifier: &str,
) -> Result<String, Error> {
    let secret = random_secret()?;
    // Abandoned sign-ins are swept here rather than by a timer.
    sqlx::query("DELETE FROM pending_sign_ins WHERE expires_at < now()")
        .execute(database)
        .await?;
    sqlx::query(
        "INSERT INTO pending_sign_ins (id_digest, state, code_verifier, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(digest(&secret))
    .bind(state)
    .bind(code_verifier)
    .bind(SIGN_IN_LIFETIME_SECONDS as f64)
    .execute(database)
    .await?;
    Ok(secret)
}

/// Takes (and so uses up) the sign-in in progress of the cookie `secret`, if it is still live.
pub async fn take_sign_in(database: &PgPool, secret: &str) -> Result<Option<PendingSignIn>, Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "DELETE FROM pending_sign_ins WHERE id_digest = $1 AND expires_at > now()
         RETURNING state, code_verifier",
    )
    .bind(digest(secret))
    .fetch_optional(database)
    .await?;
    Ok(row.map(|(state, code_verifier)| PendingSignIn {
        state,
        code_verifier,
    }))
}

/// Creates a session for `identity`; returns the cookie secret.
pub async fn create(
    database: &PgPool,
    identity: &Identity,
    refresh_token: Option<&str>,
    lifetime: std::time::Duration,
) -> Result<String, Error> {
    let secret = random_secret()?;
    let csrf_token = random_secret()?;
    sqlx::query("DELETE FROM sessions WHERE expires_at < now()")
        .execute(database)
        .await?;
    sqlx::query(
        "INSERT INTO sessions (id_digest, user_id, organization_id, email, csrf_token, expires_at,
                               role, user_name, organization_name, refresh_token, role_checked_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, $8, $9, $10, now())",
    )
    .bind(digest(&secret))
    .bind(identity.user_id)
    .bind(identity.organization_id)
    .bind(&identity.email)
    .bind(&csrf_token)
    .bind(lifetime.as_secs_f64())
    .bind(&identity.role)
    .bind(&identity.user_name)
    .bind(&identity.organization_name)
    .bind(refresh_token)
    .execute(database)
    .await?;
    Ok(secret)
}

/// The live session of the cookie `secret`, if any.
pub async fn find(database: &PgPool, secret: &str) -> Result<Option<Session>, Error> {
    let row: Option<SessionRow> = sqlx::query_as(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_digest = $1 AND expires_at > now()"
    ))
    .bind(digest(secret))
    .fetch_optional(database)
    .await?;
    Ok(row.map(Session::from_row))
}

/// Deletes the session; returns its refresh token, for revocation.
pub async fn delete(database: &PgPool, session: &Session) -> Result<Option<String>, Error> {
    let refresh_token: Option<Option<String>> =
        sqlx::query_scalar("DELETE FROM sessions WHERE id_digest = $1 RETURNING refresh_token")
            .bind(&session.id_digest)
            .fetch_optional(database)
            .await?;
    Ok(refresh_token.flatten())
}

/// Re-reads the user's role from the product and stores it; returns the session as it is now.
/// When the product no longer accepts the sign-in (revoked, user gone, moved), the session is
/// deleted and [`RoleCheckError::Ended`] returned.
pub async fn recheck_role(
    database: &PgPool,
    oauth: &OAuthClient,
    session: &Session,
) -> Result<Session, RoleCheckError> {
    let mut transaction = database.begin().await.map_err(Error::from)?;
    // The row lock makes concurrent re-reads of one session take turns with its refresh token.
    let refresh_token: Option<Option<String>> = sqlx::query_scalar(
        "SELECT refresh_token FROM sessions
          WHERE id_digest = $1 AND expires_at > now() FOR UPDATE",
    )
    .bind(&session.id_digest)
    .fetch_optional(&mut *transaction)
    .await
    .map_err(Error::from)?;
    let Some(refresh_token) = refresh_token else {
        return Err(RoleCheckError::Ended("the session has expired".into()));
    };
    let Some(refresh_token) = refresh_token else {
        drop(transaction);
        return Err(end(database, session, "the session cannot re-read the role").await);
    };
    let outcome = match oauth.refresh(&refresh_token).await {
        Ok(tokens) => match oauth.identity(&tokens.access_token).await {
            Ok(identity) => Ok((identity, tokens.refresh_token)),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    let (identity, new_refresh_token) = match outcome {
        Ok(answer) => answer,
        Err(SignInError::Refused(reason)) => {
            drop(transaction);
            return Err(end(database, session, &reason).await);
        }
        Err(SignInError::Unavailable(reason)) => return Err(RoleCheckError::Unavailable(reason)),
    };
    if identity.user_id != session.user.user_id
        || identity.organization_id != session.user.organization_id
    {
        drop(transaction);
        return Err(end(database, session, "the sign-in now names someone else").await);
    }
    let row: SessionRow = sqlx::query_as(&format!(
        "UPDATE sessions SET role = $2, user_name = $3, organization_name = $4,
                refresh_token = COALESCE($5, refresh_token), role_checked_at = now()
          WHERE id_digest = $1 RETURNING {SESSION_COLUMNS}"
    ))
    .bind(&session.id_digest)
    .bind(&identity.role)
    .bind(&identity.user_name)
    .bind(&identity.organization_name)
    .bind(new_refresh_token)
    .fetch_one(&mut *transaction)
    .await
    .map_err(Error::from)?;
    transaction.commit().await.map_err(Error::from)?;
    if identity.role != session.user.role {
        tracing::info!(user = %identity.user_id, from = %session.user.role, to = %identity.role, "a signed-in user's role changed");
    }
    Ok(Session::from_row(row))
}

async fn end(database: &PgPool, session: &Session, reason: &str) -> RoleCheckError {
    tracing::info!(user = %session.user.user_id, %reason, "a session ended because the product no longer accepts its sign-in");
    if let Err(error) = delete(database, session).await {
        return RoleCheckError::Internal(error);
    }
    RoleCheckError::Ended(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_and_distinct() {
        let first = random_secret().unwrap();
        assert_eq!(first.len(), 43);
        assert_ne!(first, random_secret().unwrap());
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s_example() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_over_https() {
        let value = cookie(SESSION_COOKIE, "abc", "/", 60, true);
        assert_eq!(
            value.to_str().unwrap(),
            "internal_host_session=abc; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; internal_host_session=xyz"),
        );
        assert_eq!(
            read_cookie(&headers, SESSION_COOKIE).as_deref(),
            Some("xyz")
        );
        assert_eq!(read_cookie(&headers, "b"), None);
    }

    #[test]
    fn constant_time_equal_compares_whole_strings() {
        assert!(constant_time_equal(b"abc", b"abc"));
        assert!(!constant_time_equal(b"abc", b"abd"));
        assert!(!constant_time_equal(b"abc", b"ab"));
    }
}
