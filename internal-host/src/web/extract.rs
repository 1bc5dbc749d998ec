//! Who is asking: the session of the request's cookie, re-read from the product when its role is
//! stale ([`Page`]), or as it is ([`Api`], for the event stream, fragments and forms); and the
//! fields of a posted form, with its CSRF token checked.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use chrono::Utc;

use crate::app::AppState;
use crate::session::{self, SESSION_COOKIE, Session};
use crate::web::error::WebError;

/// The signed-in session of a page load; the role is re-read when it is older than the
/// configured interval. Signed-out or expired: 401 with the sign-in link.
pub(crate) struct Page(pub Session);

/// The signed-in session as stored, without re-reading the role.
pub(crate) struct Api(pub Session);

/// A posted `application/x-www-form-urlencoded` body.
pub(crate) struct FormFields(Vec<(String, String)>);

impl FormFields {
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(url::form_urlencoded::parse(body).into_owned().collect())
    }

    /// The field's value; `None` when it is missing or given twice.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        let mut values = self.0.iter().filter(|(key, _)| key == name);
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Some(first.1.as_str())
    }

    /// Refuses the form unless it carries the session's CSRF token (field `csrf` or header
    /// `X-CSRF-Token`).
    pub(crate) fn check_csrf(
        &self,
        session: &Session,
        header: Option<&str>,
    ) -> Result<(), WebError> {
        if session.csrf_matches(self.get("csrf")) || session.csrf_matches(header) {
            return Ok(());
        }
        tracing::warn!(user = %session.user.user_id, "refused a form without its CSRF token");
        Err(WebError::BadCsrf)
    }
}

/// The `X-CSRF-Token` header of a request.
pub(crate) fn csrf_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get("x-csrf-token")
        .and_then(|value| value.to_str().ok())
}

/// The request's live session, if any.
pub(crate) async fn current_session(
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Result<Option<Session>, WebError> {
    if state.oauth().is_none() {
        return Err(WebError::Unavailable(
            "Signing in is not configured on this assistant; ask the operators.".into(),
        ));
    }
    let Some(secret) = session::read_cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(session::find(state.database(), &secret).await?)
}

/// The session with its role re-read when it is stale.
pub(crate) async fn fresh_session(state: &AppState, session: Session) -> Result<Session, WebError> {
    let age = Utc::now() - session.role_checked_at;
    let limit = chrono::Duration::from_std(state.config().web.role_recheck_after)
        .unwrap_or(chrono::Duration::MAX);
    if age < limit {
        return Ok(session);
    }
    recheck(state, &session).await
}

/// The session with its role re-read now.
pub(crate) async fn recheck(state: &AppState, session: &Session) -> Result<Session, WebError> {
    let Some(oauth) = state.oauth() else {
        return Err(WebError::Unavailable(
            "Signing in is not configured.".into(),
        ));
    };
    Ok(session::recheck_role(state.database(), oauth, session).await?)
}

fn signed_out() -> WebError {
    WebError::SignInNeeded(
        "You are not signed in, or your session has ended. Sign in again.".into(),
    )
}

impl FromRequestParts<AppState> for Page {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let session = current_session(&parts.headers, state)
            .await?
            .ok_or_else(signed_out)?;
        Ok(Self(fresh_session(state, session).await?))
    }
}

impl FromRequestParts<AppState> for Api {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let session = current_session(&parts.headers, state)
            .await?
            .ok_or_else(signed_out)?;
        Ok(Self(session))
    }
}

/// Ids in the path; a malformed id is as unknown as a missing one (404).
pub(crate) struct Ids<T>(pub T);

impl<T> FromRequestParts<AppState> for Ids<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(ids)) => Ok(Self(ids)),
            Err(_) => Err(WebError::NotFound),
        }
    }
}
