//! The handlers: one per page and per form. Every POST checks the CSRF token stored in
//! the session before anything else; every failure the visitor caused is a page with a
//! status code, never a panic.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use sessiondb::{Device, Error, NewSession, Session, SessionData, SessionId, SignIn, Token};

use crate::device::label_from_user_agent;
use crate::session::{
    CSRF_KEY, ClientDevice, CurrentSession, SignedIn, clear_cookie, csrf_matches, csrf_of,
    new_csrf_token, session_cookie, user_agent,
};
use crate::users::UsersError;
use crate::{AppError, AppState, Config, now, pages};

/// The fields of the login and sign-up forms. Missing fields are empty (a missing CSRF
/// token is then a 403, not a 422).
#[derive(Deserialize)]
pub struct CredentialsForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// The field of the sign-out forms.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `GET /`: the devices page if signed in, the login page otherwise.
pub async fn home(current: Option<CurrentSession>) -> Redirect {
    match current {
        Some(c) if c.session.user().is_some() => Redirect::to("/devices"),
        _ => Redirect::to("/login"),
    }
}

/// `GET /app.css`: the stylesheet (served, not inlined, so the content security policy
/// can forbid inline styles).
pub async fn stylesheet() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], pages::CSS)
}

/// Any other path.
pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        pages::message("Not found", "There is no page here."),
    )
        .into_response()
}

/// The answer to a POST whose CSRF token is missing or wrong, or whose session is gone.
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        pages::message(
            "This form has expired",
            "The form was not sent from a page of this site, or its session has ended. \
             Go back, reload the page and try again.",
        ),
    )
        .into_response()
}

/// The visitor's session and its CSRF token for the login and sign-up forms: the one
/// the cookie addresses, or a new anonymous session with the device (User-Agent,
/// address) and a label made from it, with a fresh CSRF token in its data (then also
/// the cookie to set).
async fn visitor(
    state: &AppState,
    current: Option<CurrentSession>,
    headers: &HeaderMap,
    device: Device,
) -> Result<(String, Option<Token>), AppError> {
    if let Some(csrf) = current.as_ref().and_then(|c| csrf_of(&c.session)) {
        return Ok((csrf, None));
    }
    let csrf = new_csrf_token()?;
    let mut data = SessionData::new();
    data.insert(CSRF_KEY, &csrf)?;
    let config = &state.config;
    let new = NewSession::anonymous()
        .label(label_from_user_agent(user_agent(headers)))
        .device(device)
        .lifetime(config.visitor_lifetime.min(config.lifetime))
        .idle_timeout(config.idle_timeout)
        .data(data);
    let (token, _) = state.store.create(new).await?;
    Ok((csrf, Some(token)))
}

/// A form page for a visitor, setting the visitor's cookie if their session is new.
fn form_page(
    state: &AppState,
    status: StatusCode,
    new_token: Option<Token>,
    html: Html<String>,
) -> Response {
    match new_token {
        Some(token) => (
            status,
            [(SET_COOKIE, session_cookie(&state.config, &token, None))],
            html,
        )
            .into_response(),
        None => (status, html).into_response(),
    }
}

/// `GET /login`.
pub async fn login_page(
    State(state): State<AppState>,
    current: Option<CurrentSession>,
    ClientDevice(device): ClientDevice,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if current.as_ref().is_some_and(|c| c.session.user().is_some()) {
        return Ok(Redirect::to("/devices").into_response());
    }
    let (csrf, new_token) = visitor(&state, current, &headers, device).await?;
    let html = pages::login(&csrf, None, "");
    Ok(form_page(&state, StatusCode::OK, new_token, html))
}

/// `GET /signup`.
pub async fn signup_page(
    State(state): State<AppState>,
    current: Option<CurrentSession>,
    ClientDevice(device): ClientDevice,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    if current.as_ref().is_some_and(|c| c.session.user().is_some()) {
        return Ok(Redirect::to("/devices").into_response());
    }
    let (csrf, new_token) = visitor(&state, current, &headers, device).await?;
    let html = pages::signup(&csrf, None, "");
    Ok(form_page(&state, StatusCode::OK, new_token, html))
}

// README snippet start: the login handler
/// `POST /login`: checks the CSRF token, then the password, then logs in on the
/// visitor's session.
pub async fn login(
    State(state): State<AppState>,
    current: Option<CurrentSession>,
    Form(form): Form<CredentialsForm>,
) -> Result<Response, AppError> {
    // The form must come from a page served to this session.
    let Some(current) = current.filter(|c| csrf_matches(&c.session, &form.csrf)) else {
        return Ok(forbidden());
    };
    // argon2 is slow on purpose: keep it off the async worker threads.
    let (users, name, password) = (state.users.clone(), form.username.clone(), form.password);
    let user = tokio::task::spawn_blocking(move || users.verify(&name, &password)).await?;
    let Some(user) = user else {
        // One message whether the user is unknown or the password wrong.
        let csrf = csrf_of(&current.session).unwrap_or_default();
        let html = pages::login(&csrf, Some("Wrong username or password."), &form.username);
        return Ok((StatusCode::UNAUTHORIZED, html).into_response());
    };
    sign_in(&state, &current.token, &user).await
}

/// Logs `user` in on the session `token` addresses, signed in with their password;
/// answers with the new cookie.
async fn sign_in(state: &AppState, token: &Token, user: &str) -> Result<Response, AppError> {
    // A new token and the user bound: a token planted before login is worthless now.
    // The session records how (the devices page shows it; sudo mode asks it).
    let how = SignIn::with("password");
    let token = match state.store.login_with(token, user, how).await {
        Ok(token) => token,
        // Ended meanwhile, or an old token still in its rotation grace (a double submit).
        Err(Error::Ended | Error::TokenRetired) => return Ok(forbidden()),
        Err(e) => return Err(e.into()),
    };
    // A fresh CSRF token for the signed-in session.
    state
        .store
        .put(&token, CSRF_KEY, &new_csrf_token()?)
        .await?;
    // The absolute lifetime counts from sign-in, not from the first visit.
    let signed_in_at = state
        .store
        .peek(&token)
        .await?
        .and_then(|s| s.authenticated_at());
    let deadline = signed_in_at
        .unwrap_or_else(now)
        .saturating_add(state.config.lifetime);
    state.store.set_expiry(&token, deadline).await?;
    // The cookie lives as long as the session can; the idle deadline is the store's job.
    let max_age = deadline.saturating_since(now());
    let cookie = session_cookie(&state.config, &token, Some(max_age));
    Ok(([(SET_COOKIE, cookie)], Redirect::to("/devices")).into_response())
}
// README snippet end

/// `POST /signup`: checks the CSRF token, creates the account, then logs in as for
/// `POST /login`.
pub async fn signup(
    State(state): State<AppState>,
    current: Option<CurrentSession>,
    Form(form): Form<CredentialsForm>,
) -> Result<Response, AppError> {
    let Some(current) = current.filter(|c| csrf_matches(&c.session, &form.csrf)) else {
        return Ok(forbidden());
    };
    let (users, name, password) = (state.users.clone(), form.username.clone(), form.password);
    let created = tokio::task::spawn_blocking(move || users.sign_up(&name, &password)).await?;
    let user = match created {
        Ok(user) => user,
        Err(e @ (UsersError::BadUsername | UsersError::BadPassword | UsersError::Taken)) => {
            let csrf = csrf_of(&current.session).unwrap_or_default();
            let html = pages::signup(&csrf, Some(&capitalize(&e.to_string())), &form.username);
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, html).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    sign_in(&state, &current.token, &user).await
}

/// `GET /devices`: the signed-in user's sessions.
pub async fn devices(
    State(state): State<AppState>,
    me: SignedIn,
) -> Result<Html<String>, AppError> {
    let sessions = state.store.sessions_of(me.user.as_str()).await?;
    let csrf = csrf_of(&me.session).unwrap_or_default();
    Ok(pages::devices(&state.config, &me, &sessions, &csrf, now()))
}

/// `POST /devices/{id}/sign-out`: ends one of the signed-in user's sessions by its
/// public id ("sign out this device"). An id that is not one of theirs is a 404, the
/// same as an id that does not exist.
pub async fn sign_out_device(
    State(state): State<AppState>,
    me: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    if !csrf_matches(&me.session, &form.csrf) {
        return Ok(forbidden());
    }
    let Ok(id) = SessionId::parse(&id) else {
        return Ok(not_found().await);
    };
    // The public id is not a secret: ownership is what authorises ending it.
    let theirs = state
        .store
        .get_by_id(id)
        .await?
        .is_some_and(|s| s.user() == Some(&me.user));
    if !theirs {
        return Ok(not_found().await);
    }
    state.store.end_by_id(id).await?;
    if id == me.session.id() {
        return Ok(signed_out(&state));
    }
    Ok(Redirect::to("/devices").into_response())
}

/// `POST /sign-out`: ends this session.
pub async fn sign_out(
    State(state): State<AppState>,
    me: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    if !csrf_matches(&me.session, &form.csrf) {
        return Ok(forbidden());
    }
    state.store.end(&me.token).await?;
    Ok(signed_out(&state))
}

/// `POST /sign-out-everywhere`: ends every session of the signed-in user.
pub async fn sign_out_everywhere(
    State(state): State<AppState>,
    me: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    if !csrf_matches(&me.session, &form.csrf) {
        return Ok(forbidden());
    }
    state.store.revoke_user(me.user.as_str()).await?;
    Ok(signed_out(&state))
}

/// `POST /sign-out-others`: "sign out all other devices" — ends every other session
/// of the signed-in user in one step (a login on another device racing it is ended or
/// comes after) and keeps this one; back to the devices page.
pub async fn sign_out_others(
    State(state): State<AppState>,
    me: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    if !csrf_matches(&me.session, &form.csrf) {
        return Ok(forbidden());
    }
    state.store.revoke_others(&me.token).await?;
    Ok(Redirect::to("/devices").into_response())
}

/// The change-password form: the new password, and the current one unless the session
/// proved it recently.
#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    csrf: String,
}

/// Whether the session proved the password within the re-authentication window ("sudo
/// mode"): signed in with it, or confirmed it on the change-password form, that
/// recently. A zero window asks every time.
fn signed_in_recently(config: &Config, session: &Session) -> bool {
    !config.reauth_window.is_zero() && session.authenticated_within(1, config.reauth_window)
}

/// `GET /password`: the change-password form, asking for the current password too
/// unless this session proved it within the re-authentication window.
pub async fn password_page(State(state): State<AppState>, me: SignedIn) -> Html<String> {
    let csrf = csrf_of(&me.session).unwrap_or_default();
    let ask = !signed_in_recently(&state.config, &me.session);
    pages::password(&me, &csrf, ask, None)
}

/// `POST /password`: a sensitive action. Checks the CSRF token; unless the session
/// proved the password recently, the current password (a wrong one changes nothing; the
/// right one is a step-up, [`sessiondb::Sessions::step_up`]: a new token, and the form
/// does not ask again within the window); then sets the new password, signs this
/// session in afresh (a new token) and ends every session of the user that signed in
/// before that — for good: an old session brought back from a backup is refused
/// ([`sessiondb::Sessions::revoke_user_before`]).
pub async fn change_password(
    State(state): State<AppState>,
    me: SignedIn,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    if !csrf_matches(&me.session, &form.csrf) {
        return Ok(forbidden());
    }
    let csrf = csrf_of(&me.session).unwrap_or_default();
    let mut token = me.token.clone();
    // The cookie for the stepped-up token, for an answer that does not sign in afresh.
    let mut stepped_up = None;
    if !signed_in_recently(&state.config, &me.session) {
        let (users, user, current) = (state.users.clone(), me.user.to_string(), form.current);
        let proved = tokio::task::spawn_blocking(move || users.verify(&user, &current)).await?;
        if proved.is_none() {
            let html = pages::password(&me, &csrf, true, Some("Wrong password."));
            return Ok((StatusCode::UNAUTHORIZED, html).into_response());
        }
        // Sudo mode: proved again now, on a new token.
        token = match state
            .store
            .step_up(&me.token, SignIn::with("password"))
            .await
        {
            Ok(token) => token,
            // Ended meanwhile, or a double submit on the old token.
            Err(Error::Ended | Error::TokenRetired) => return Ok(forbidden()),
            Err(e) => return Err(e.into()),
        };
        let max_age = me.session.absolute_deadline().saturating_since(now());
        stepped_up = Some(session_cookie(&state.config, &token, Some(max_age)));
    }
    let with_cookie = |mut response: Response| {
        if let Some(cookie) = stepped_up.clone() {
            response.headers_mut().insert(SET_COOKIE, cookie);
        }
        response
    };
    let (users, user, new) = (state.users.clone(), me.user.to_string(), form.new);
    match tokio::task::spawn_blocking(move || users.set_password(&user, &new)).await? {
        Ok(()) => {}
        Err(e @ UsersError::BadPassword) => {
            // Proved recently or just now: asked again only with a zero window.
            let ask = state.config.reauth_window.is_zero();
            let html = pages::password(&me, &csrf, ask, Some(&capitalize(&e.to_string())));
            return Ok(with_cookie(
                (StatusCode::UNPROCESSABLE_ENTITY, html).into_response(),
            ));
        }
        Err(e) => return Ok(with_cookie(AppError::from(e).into_response())),
    }
    // Signed in afresh with the new password (the public id stays), then every session
    // that signed in before it ends.
    let response = sign_in(&state, &token, me.user.as_str()).await?;
    let signed_in_at = state
        .store
        .get_by_id(me.session.id())
        .await?
        .and_then(|s| s.authenticated_at())
        .unwrap_or_else(now);
    state
        .store
        .revoke_user_before(me.user.as_str(), signed_in_at)
        .await?;
    Ok(response)
}

/// Clears the cookie and goes to the login page.
fn signed_out(state: &AppState) -> Response {
    (
        [(SET_COOKIE, clear_cookie(&state.config))],
        Redirect::to("/login"),
    )
        .into_response()
}

/// The first letter in upper case, for error messages shown as sentences.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
