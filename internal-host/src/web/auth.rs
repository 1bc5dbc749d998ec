//! Sign-in and sign-out. `GET /auth/sign-in` starts an authorization request (a fresh `state` and
//! PKCE verifier, bound to this browser by a short-lived cookie) and sends the browser to the
//! product's sign-in page; `GET /auth/callback` checks the cookie, the `state` and the issuer,
//! redeems the code, asks the product who signed in, and starts a session; `POST /auth/sign-out`
//! deletes the session and revokes its refresh token.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::app::AppState;
use crate::session::{self, SESSION_COOKIE, SIGN_IN_COOKIE, SIGN_IN_LIFETIME_SECONDS};
use crate::sign_in::SignInError;
use crate::web::error::WebError;
use crate::web::extract::{self, FormFields, csrf_header};
use crate::web::pages::render_sign_in;

#[derive(Debug, Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /auth/sign-in`.
pub(crate) async fn sign_in(State(state): State<AppState>) -> Result<Response, WebError> {
    let Some(oauth) = state.oauth() else {
        return Err(WebError::Unavailable(
            "Signing in is not configured on this assistant; ask the operators.".into(),
        ));
    };
    let request_state = session::random_secret()?;
    let verifier = session::random_secret()?;
    let secret = session::begin_sign_in(state.database(), &request_state, &verifier).await?;
    let location = oauth.authorization_url(&request_state, &session::code_challenge(&verifier));
    let mut response = Redirect::to(&location).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::cookie(
            SIGN_IN_COOKIE,
            &secret,
            "/auth",
            SIGN_IN_LIFETIME_SECONDS,
            state.config().web.is_https(),
        ),
    );
    Ok(response)
}

/// `GET /auth/callback`.
pub(crate) async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Callback>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, WebError> {
    let Some(oauth) = state.oauth() else {
        return Err(WebError::Unavailable(
            "Signing in is not configured on this assistant; ask the operators.".into(),
        ));
    };
    let Ok(Query(callback)) = query else {
        return Err(WebError::BadRequest(
            "The sign-in answer is malformed.".into(),
        ));
    };
    let secure = state.config().web.is_https();
    // The pending sign-in is used up whatever happens next.
    let pending = match session::read_cookie(&headers, SIGN_IN_COOKIE) {
        Some(secret) => session::take_sign_in(state.database(), &secret).await?,
        None => None,
    };
    let Some(pending) = pending else {
        return Err(WebError::BadRequest(
            "This sign-in has expired or was started in another browser. Start again from the sign-in page.".into(),
        ));
    };
    let state_matches = callback.state.as_deref().is_some_and(|presented| {
        session::constant_time_equal(presented.as_bytes(), pending.state.as_bytes())
    });
    if !state_matches {
        tracing::warn!("refused a sign-in callback whose state does not match");
        return Err(WebError::BadRequest(
            "This sign-in answer does not belong to the sign-in this browser started. Start again."
                .into(),
        ));
    }
    // RFC 9207: the answer must come from the server the request went to.
    if callback
        .iss
        .as_deref()
        .is_some_and(|issuer| issuer.trim_end_matches('/') != oauth.issuer())
    {
        return Err(WebError::BadRequest(
            "The sign-in answer came from another server.".into(),
        ));
    }
    if let Some(error) = &callback.error {
        let description = callback.error_description.as_deref().unwrap_or(error);
        let message = format!("Signing in did not complete: {description}.");
        let mut response = render_sign_in(&state, &headers, Some(&message), true)?;
        *response.status_mut() = axum::http::StatusCode::FORBIDDEN;
        clear_sign_in_cookie(&mut response, secure);
        return Ok(response);
    }
    let Some(code) = callback.code.as_deref() else {
        return Err(WebError::BadRequest(
            "The sign-in answer has no code.".into(),
        ));
    };
    let tokens = oauth
        .redeem(code, &pending.code_verifier)
        .await
        .map_err(sign_in_failed)?;
    let identity = oauth
        .identity(&tokens.access_token)
        .await
        .map_err(sign_in_failed)?;
    let secret = session::create(
        state.database(),
        &identity,
        tokens.refresh_token.as_deref(),
        state.config().web.session_lifetime,
    )
    .await?;
    tracing::info!(user = %identity.user_id, organization = %identity.organization_id, role = %identity.role, "signed in");
    let mut response = Redirect::to("/").into_response();
    let lifetime = i64::try_from(state.config().web.session_lifetime.as_secs()).unwrap_or(3600);
    response.headers_mut().append(
        header::SET_COOKIE,
        session::cookie(SESSION_COOKIE, &secret, "/", lifetime, secure),
    );
    clear_sign_in_cookie(&mut response, secure);
    Ok(response)
}

/// `POST /auth/sign-out`.
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let secure = state.config().web.is_https();
    if let Some(session) = extract::current_session(&headers, &state).await? {
        let form = FormFields::parse(&body);
        form.check_csrf(&session, csrf_header(&headers))?;
        let refresh_token = session::delete(state.database(), &session).await?;
        if let (Some(oauth), Some(refresh_token)) = (state.oauth(), refresh_token) {
            oauth.revoke(&refresh_token).await;
        }
        tracing::info!(user = %session.user.user_id, "signed out");
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::cookie(SESSION_COOKIE, "", "/", 0, secure),
    );
    Ok(response)
}

fn clear_sign_in_cookie(response: &mut Response, secure: bool) {
    response.headers_mut().append(
        header::SET_COOKIE,
        session::cookie(SIGN_IN_COOKIE, "", "/auth", 0, secure),
    );
}

fn sign_in_failed(error: SignInError) -> WebError {
    match error {
        SignInError::Refused(reason) => {
            tracing::warn!(%reason, "a sign-in was refused");
            WebError::SignInNeeded("The product refused this sign-in. Start again.".into())
        }
        SignInError::Unavailable(reason) => {
            tracing::warn!(%reason, "the sign-in server is unavailable");
            WebError::Unavailable(
                "The product's sign-in server cannot be reached; try again in a moment.".into(),
            )
        }
    }
}
