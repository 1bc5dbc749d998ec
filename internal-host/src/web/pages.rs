//! The pages and their forms: the conversation list with a new-chat form, the chat page, one
//! turn as a fragment (what the page's script swaps in), and the POSTs that ask, stop and answer
//! approvals. Every POST checks the session's CSRF token first; every read goes through the
//! signed-in owner, so another user's ids answer 404.

use std::collections::HashMap;

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use uuid::Uuid;

use crate::app::AppState;
use crate::conversations::{self, OwnedConversation, Owner};
use crate::events::StoredEvent;
use crate::llm::ModelInfo;
use crate::session::{self, SESSION_COOKIE, Session};
use crate::turns::Decision;
use crate::web::error::WebError;
use crate::web::extract::{self, Api, FormFields, Ids, Page, csrf_header};
use crate::web::view::{TurnInputs, TurnView};

/// The most conversations the sidebar lists.
const LISTED_CONVERSATIONS: i64 = 50;
/// Events are read in pages of this many.
const EVENT_PAGE: i64 = 1000;

/// The account line of every signed-in page.
pub(crate) struct Header {
    pub user_name: String,
    pub email: String,
    pub organization_name: String,
    pub role: String,
    pub csrf: String,
}

pub(crate) struct ListedConversation {
    pub id: Uuid,
    pub title: String,
    pub current: bool,
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage<'a> {
    message: Option<&'a str>,
    available: bool,
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    header: Header,
    conversations: Vec<ListedConversation>,
    model: ModelInfo,
    max_question_chars: usize,
}

#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage {
    header: Header,
    conversations: Vec<ListedConversation>,
    model: ModelInfo,
    max_question_chars: usize,
    conversation_id: Uuid,
    title: String,
    turns: Vec<String>,
    last_sequence: i64,
    any_active: bool,
}

impl Header {
    pub(crate) fn of(session: &Session) -> Self {
        Self {
            user_name: session.user_name.clone(),
            email: session.email.clone(),
            organization_name: session.organization_name.clone(),
            role: session.user.role.clone(),
            csrf: session.csrf_token.clone(),
        }
    }
}

/// `GET /`: the conversation list and a new chat, or the sign-in page.
pub(crate) async fn index(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let session = match extract::current_session(&headers, &state).await {
        Ok(session) => session,
        Err(WebError::Unavailable(_)) if state.oauth().is_none() => {
            return render_sign_in(&state, &headers, None, false);
        }
        Err(error) => return Err(error),
    };
    let Some(session) = session else {
        let stale = session::read_cookie(&headers, SESSION_COOKIE).is_some();
        let message = stale.then_some("Your session has ended. Sign in again.");
        return render_sign_in(&state, &headers, message, true);
    };
    let session = match extract::fresh_session(&state, session).await {
        Ok(session) => session,
        Err(WebError::SignInNeeded(message)) => {
            return render_sign_in(&state, &headers, Some(&message), true);
        }
        Err(error) => return Err(error),
    };
    let page = ListPage {
        conversations: listed(&state, &session, None).await?,
        header: Header::of(&session),
        model: state.orchestrator().model(),
        max_question_chars: state.orchestrator().max_question_chars(),
    };
    html(page.render())
}

/// The sign-in page; a stale session cookie is cleared.
pub(crate) fn render_sign_in(
    state: &AppState,
    headers: &HeaderMap,
    message: Option<&str>,
    available: bool,
) -> Result<Response, WebError> {
    let mut response = html(SignInPage { message, available }.render())?;
    if session::read_cookie(headers, SESSION_COOKIE).is_some() {
        response.headers_mut().append(
            header::SET_COOKIE,
            session::cookie(SESSION_COOKIE, "", "/", 0, state.config().web.is_https()),
        );
    }
    Ok(response)
}

/// `GET /conversations/{id}`: the chat page with its whole history.
pub(crate) async fn chat(
    State(state): State<AppState>,
    Page(session): Page,
    Ids(conversation_id): Ids<Uuid>,
) -> Result<Response, WebError> {
    let owner = Owner::from(&session.user);
    let conversation = conversations::find(state.database(), owner, conversation_id)
        .await?
        .ok_or(WebError::NotFound)?;
    // Events first (see `turn_fragment`).
    let events = read_all_events(&state, &conversation).await?;
    let turns = conversations::turns(state.database(), owner, &conversation).await?;
    let statuses = conversations::approval_statuses(state.database(), owner, &conversation).await?;
    let inputs = TurnInputs {
        conversation_id: conversation.id,
        csrf: &session.csrf_token,
        approval_statuses: &statuses,
        now: Utc::now(),
    };
    let mut by_turn: HashMap<Uuid, Vec<&StoredEvent>> = HashMap::new();
    for stored in &events {
        by_turn.entry(stored.turn_id).or_default().push(stored);
    }
    let mut rendered = Vec::with_capacity(turns.len());
    let mut any_active = false;
    for turn in &turns {
        let view = TurnView::build(
            turn,
            by_turn.get(&turn.id).map(Vec::as_slice).unwrap_or(&[]),
            &inputs,
        );
        any_active |= view.can_stop;
        rendered.push(view.render().map_err(render_error)?);
    }
    let page = ChatPage {
        conversations: listed(&state, &session, Some(conversation.id)).await?,
        header: Header::of(&session),
        model: state.orchestrator().model(),
        max_question_chars: state.orchestrator().max_question_chars(),
        conversation_id: conversation.id,
        title: conversation.title.clone(),
        turns: rendered,
        last_sequence: events.last().map_or(0, |stored| stored.sequence),
        any_active,
    };
    html(page.render())
}

/// `GET /conversations/{id}/turns/{turn}`: one turn's HTML, for the page's script.
pub(crate) async fn turn_fragment(
    State(state): State<AppState>,
    Api(session): Api,
    Ids((conversation_id, turn_id)): Ids<(Uuid, Uuid)>,
) -> Result<Response, WebError> {
    let owner = Owner::from(&session.user);
    // The events before the turn's status and the approvals': whoever changes those stores the
    // change before appending the event that tells of it, so what is read after the events is at
    // least as new as they are. Read the other way round, a turn could come back with its
    // `TurnFinished` and the status from before it (running, its approval card inactive), and the
    // page, having seen that event, would never ask again. (Nothing is shown before the owner is
    // checked below.)
    let events = state.events().read_turn(turn_id).await?;
    let turn = conversations::turn(state.database(), owner, conversation_id, turn_id)
        .await?
        .ok_or(WebError::NotFound)?;
    let conversation = conversations::find(state.database(), owner, conversation_id)
        .await?
        .ok_or(WebError::NotFound)?;
    let statuses = conversations::approval_statuses(state.database(), owner, &conversation).await?;
    let inputs = TurnInputs {
        conversation_id: conversation.id,
        csrf: &session.csrf_token,
        approval_statuses: &statuses,
        now: Utc::now(),
    };
    let references: Vec<&StoredEvent> = events.iter().collect();
    html(TurnView::build(&turn, &references, &inputs).render())
}

/// `POST /conversations`: the first question of a new conversation.
pub(crate) async fn new_conversation(
    State(state): State<AppState>,
    Api(session): Api,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    form.check_csrf(&session, csrf_header(&headers))?;
    ask_in(&state, &session, None, &form).await
}

/// `POST /conversations/{id}/turns`: a follow-up question.
pub(crate) async fn ask(
    State(state): State<AppState>,
    Api(session): Api,
    Ids(conversation_id): Ids<Uuid>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    form.check_csrf(&session, csrf_header(&headers))?;
    ask_in(&state, &session, Some(conversation_id), &form).await
}

async fn ask_in(
    state: &AppState,
    session: &Session,
    conversation_id: Option<Uuid>,
    form: &FormFields,
) -> Result<Response, WebError> {
    let question = form
        .get("question")
        .ok_or_else(|| WebError::Unprocessable("Write a question first.".into()))?;
    // A turn acts with the user's role as the product says it is now.
    let session = extract::recheck(state, session).await?;
    let (conversation_id, _turn_id) = state
        .orchestrator()
        .ask(&session.user, conversation_id, question)
        .await?;
    Ok(see_other(&format!("/conversations/{conversation_id}")))
}

/// `POST /conversations/{id}/turns/{turn}/stop`.
pub(crate) async fn stop(
    State(state): State<AppState>,
    Api(session): Api,
    Ids((conversation_id, turn_id)): Ids<(Uuid, Uuid)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    form.check_csrf(&session, csrf_header(&headers))?;
    state
        .orchestrator()
        .stop(&session.user, conversation_id, turn_id)
        .await?;
    Ok(see_other(&format!("/conversations/{conversation_id}")))
}

/// `POST /conversations/{id}/approvals/{approval}` with `decision` = `confirm` or `reject`.
pub(crate) async fn decide(
    State(state): State<AppState>,
    Api(session): Api,
    Ids((conversation_id, approval_id)): Ids<(Uuid, Uuid)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let form = FormFields::parse(&body);
    form.check_csrf(&session, csrf_header(&headers))?;
    let decision = match form.get("decision") {
        Some("confirm") => Decision::Confirm,
        Some("reject") => Decision::Reject,
        _ => {
            return Err(WebError::BadRequest(
                "The decision must be confirm or reject.".into(),
            ));
        }
    };
    let session = extract::recheck(&state, &session).await?;
    state
        .orchestrator()
        .decide(&session.user, conversation_id, approval_id, decision)
        .await?;
    Ok(see_other(&format!("/conversations/{conversation_id}")))
}

pub(crate) async fn listed(
    state: &AppState,
    session: &Session,
    current: Option<Uuid>,
) -> Result<Vec<ListedConversation>, WebError> {
    let owner = Owner::from(&session.user);
    Ok(
        conversations::list(state.database(), owner, LISTED_CONVERSATIONS)
            .await?
            .into_iter()
            .map(|conversation| ListedConversation {
                current: Some(conversation.id) == current,
                id: conversation.id,
                title: conversation.title,
            })
            .collect(),
    )
}

async fn read_all_events(
    state: &AppState,
    conversation: &OwnedConversation,
) -> Result<Vec<StoredEvent>, WebError> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = state
            .events()
            .read_after(conversation.id, after, EVENT_PAGE)
            .await?;
        let full = page.len() as i64 == EVENT_PAGE;
        if let Some(last) = page.last() {
            after = last.sequence;
        }
        events.extend(page);
        if !full {
            return Ok(events);
        }
    }
}

/// A 303 to `location` (a path of this host).
pub(crate) fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

pub(crate) fn html(rendered: askama::Result<String>) -> Result<Response, WebError> {
    let body = rendered.map_err(render_error)?;
    let mut response = (StatusCode::OK, Html(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(response)
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(render_error)`
fn render_error(error: askama::Error) -> WebError {
    WebError::Internal(crate::error::Error::Internal(format!(
        "a page could not be rendered: {error}"
    )))
}
