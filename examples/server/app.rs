//! The example service's HTTP API (DESIGN §6): routes, the admin check, JSON
//! errors. `main.rs` builds the `ApiTokens` and serves this router; the
//! integration tests mount the same router.
//!
//! Password checks are limited per user name and per client, the client being
//! the peer's address: serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()`. Behind a reverse
//! proxy, derive the `ClientId` from the address it forwards instead.

use axum::extract::rejection::JsonRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64ct::{Base64, Encoding};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tower_api_tokens::password::Password;
use tower_api_tokens::policy::Policy;
use tower_api_tokens::store::{TokenId, TokenRecord, User, UserId};
use tower_api_tokens::{ApiTokens, ClientId, ManageError, Principal, StoreError};

/// The realm of every challenge this service sends.
pub const REALM: &str = "api-tokens";

/// The header that carries the policy's version on the settings routes.
pub const POLICY_VERSION_HEADER: &str = "api-token-settings-version";

/// The whole API. Token routes sit behind the layer; admin routes accept an
/// admin's token or an admin's HTTP Basic credentials, so an administrator can
/// always change the policy, also when it refuses every token. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: password checks need
/// the peer's address.
pub fn router(tokens: ApiTokens) -> Router {
    let profile = get(own_token)
        .delete(revoke_own_token)
        .layer(tokens.layer())
        // Added after the layer: generating a token needs the password, not a token.
        .post(generate);
    let admin = Router::new()
        .route(
            "/api/v1/admin/api-token-settings",
            get(get_policy).put(put_policy),
        )
        .route("/api/v1/admin/users", post(create_user))
        .route("/api/v1/admin/api-tokens", get(list_tokens))
        .route("/api/v1/admin/api-tokens/{id}", delete(revoke_any_token))
        .layer(tokens.layer().allow_anonymous(true));
    Router::new()
        .route("/api/v1/profile/api-key", profile)
        .route("/api/v1/whoami", get(whoami).layer(tokens.layer()))
        .merge(admin)
        .route("/healthz", get(|| async { "ok" }))
        .with_state(tokens)
}

// ---- profile -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateBody {
    username: String,
    password: String,
    #[serde(default)]
    rotate: bool,
}

async fn generate(
    State(tokens): State<ApiTokens>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<GenerateBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    // Serde's message could quote a misplaced password: say only what is expected.
    let Json(body) = body.map_err(|_| {
        ApiError::invalid_request(
            "the body must be JSON: {\"username\": \"…\", \"password\": \"…\", \"rotate\": false}",
        )
    })?;
    let password = Password::new(body.password);
    let generated = tokens
        .generate_from(ClientId::from(peer), &body.username, &password, body.rotate)
        .await?;
    let mut answer = json!({
        "token": generated.token.as_ref().map(|t| t.expose()),
        "token_id": generated.record.id,
        "expires_at": rfc3339(generated.expires_at),
        "reused": generated.reused,
        "hint": generated.record.hint,
    });
    if generated.token.is_none() {
        answer["note"] = json!(
            "this token was shown once when it was created; send \"rotate\": true for a new one"
        );
    }
    Ok(Json(answer))
}

async fn own_token(
    State(tokens): State<ApiTokens>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let record = tokens.token(principal.token_id()).await?;
    Ok(Json(token_json(&record, Some(principal.expires_at()))))
}

async fn revoke_own_token(
    State(tokens): State<ApiTokens>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let record = tokens
        .revoke_as(principal.user(), principal.token_id())
        .await?;
    Ok(Json(token_json(&record, None)))
}

async fn whoami(principal: Principal) -> Json<Principal> {
    Json(principal)
}

// ---- admin ---------------------------------------------------------------

/// An administrator, by token or by HTTP Basic credentials.
struct Admin;

impl FromRequestParts<ApiTokens> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, tokens: &ApiTokens) -> Result<Self, ApiError> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return if tokens.is_admin(principal.user()) {
                Ok(Admin)
            } else {
                Err(ApiError::insufficient_scope())
            };
        }
        let Some((username, password)) = basic_credentials(parts)? else {
            return Err(ApiError::unauthorized());
        };
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(ApiError::no_peer_address)?;
        let user = tokens
            .verify_password_from(ClientId::from(peer), &username, &password)
            .await?;
        if tokens.is_admin(&user) {
            Ok(Admin)
        } else {
            Err(ApiError::insufficient_scope())
        }
    }
}

/// `Authorization: Basic …`, decoded; `None` if the request has none.
fn basic_credentials(parts: &Parts) -> Result<Option<(String, Password)>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let malformed = || {
        ApiError::invalid_request("malformed Basic credentials")
            .with_header(WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\""))
    };
    let decoded = Base64::decode_vec(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (username, password) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok(Some((username.to_owned(), Password::new(password))))
}

async fn get_policy(_: Admin, State(tokens): State<ApiTokens>) -> Response {
    policy_response(tokens.policy())
}

async fn put_policy(
    _: Admin,
    State(tokens): State<ApiTokens>,
    body: Result<Json<Policy>, JsonRejection>,
) -> Result<Response, ApiError> {
    // A policy holds no secret: serde's message helps the administrator.
    let Json(policy) = body.map_err(|e| ApiError::invalid_request(&e.body_text()))?;
    Ok(policy_response(tokens.set_policy(policy).await?))
}

fn policy_response(current: tower_api_tokens::policy::VersionedPolicy) -> Response {
    let mut response = Json(current.policy).into_response();
    response
        .headers_mut()
        .insert(POLICY_VERSION_HEADER, HeaderValue::from(current.version));
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default = "local")]
    identity_provider: String,
}

fn local() -> String {
    "local".to_owned()
}

async fn create_user(
    _: Admin,
    State(tokens): State<ApiTokens>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let Json(new) = body.map_err(|_| {
        ApiError::invalid_request(
            "the body must be JSON: {\"username\", \"password\", \"roles\": [..], \"identity_provider\"}",
        )
    })?;
    if new.username.trim().is_empty() || new.username.contains(':') {
        return Err(ApiError::invalid_request(
            "the user name must not be empty or contain ':'",
        ));
    }
    if new.password.chars().count() < 8 {
        return Err(ApiError::invalid_request(
            "the password must have at least 8 characters",
        ));
    }
    if new.identity_provider.is_empty() || new.roles.iter().any(String::is_empty) {
        return Err(ApiError::invalid_request(
            "roles and the identity provider must not be empty",
        ));
    }
    let user = User {
        id: UserId::new(),
        username: new.username,
        roles: new.roles,
        identity_provider: new.identity_provider,
    };
    tokens
        .create_user(&user, &Password::new(new.password))
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn list_tokens(_: Admin, State(tokens): State<ApiTokens>) -> Result<Json<Value>, ApiError> {
    let records = tokens.list(None).await?;
    Ok(Json(Value::Array(
        records.iter().map(|r| token_json(r, None)).collect(),
    )))
}

async fn revoke_any_token(
    _: Admin,
    State(tokens): State<ApiTokens>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: TokenId = id
        .parse()
        .map_err(|_| ApiError::invalid_request("the token id must be a UUID"))?;
    let record = tokens.revoke(id).await?;
    Ok(Json(token_json(&record, None)))
}

// ---- JSON forms and errors ---------------------------------------------------

fn rfc3339(at: Option<OffsetDateTime>) -> Option<String> {
    at.and_then(|t| t.format(&Rfc3339).ok())
}

/// A token's metadata (never its secret or hash). `effective` is the expiry
/// under the current policy, when known.
fn token_json(record: &TokenRecord, effective: Option<Option<OffsetDateTime>>) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    if let Some(effective) = effective {
        value["effective_expires_at"] = json!(rfc3339(effective));
    }
    value
}

/// A JSON error: `{"error": "...", "error_description": "..."}` with a status
/// and the headers it needs.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    description: String,
    headers: Vec<(axum::http::HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: axum::http::HeaderName, value: String) -> Self {
        if let Ok(value) = HeaderValue::try_from(value) {
            self.headers.push((name, value));
        }
        self
    }

    fn invalid_request(description: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    /// The router was served without the peer's address.
    fn no_peer_address() -> Self {
        tracing::error!("no peer address: serve with into_make_service_with_connect_info");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the server cannot check passwords",
        )
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an administrator's token or Basic credentials are required",
        )
        .with_header(WWW_AUTHENTICATE, format!("Bearer realm=\"{REALM}\""))
        .with_header(WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\""))
    }

    fn insufficient_scope() -> Self {
        let description = "the administrator role is required";
        Self::new(StatusCode::FORBIDDEN, "insufficient_scope", description).with_header(
            WWW_AUTHENTICATE,
            format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{description}\""
            ),
        )
    }
}

impl From<ManageError> for ApiError {
    fn from(err: ManageError) -> Self {
        let status = err.status();
        let code = match &err {
            ManageError::InvalidCredentials => "invalid_credentials",
            ManageError::RateLimited { .. } => "too_many_attempts",
            ManageError::NotPermitted => "not_permitted",
            ManageError::Forbidden => "insufficient_scope",
            ManageError::Policy(_) => "invalid_request",
            ManageError::UnknownUser | ManageError::UnknownToken => "not_found",
            ManageError::Store(StoreError::Conflict(_)) => "conflict",
            ManageError::Store(StoreError::NotFound) => "not_found",
            ManageError::Store(_) => "temporarily_unavailable",
            _ => "server_error",
        };
        let description = match &err {
            // Keep backend details in the log, not in the answer.
            ManageError::Store(e) if status == StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %e, "store failure");
                "the token store is unavailable".to_owned()
            }
            other => other.to_string(),
        };
        let mut api = Self::new(status, code, description);
        match err {
            ManageError::RateLimited { retry_after } => {
                // Round up: retrying a second early would be refused again.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                api = api.with_header(RETRY_AFTER, secs.max(1).to_string());
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                api = api.with_header(RETRY_AFTER, "1".to_owned());
            }
            ManageError::InvalidCredentials => {
                api = api.with_header(WWW_AUTHENTICATE, format!("Basic realm=\"{REALM}\""));
            }
            _ => {}
        }
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.error, "error_description": self.description}));
        let mut response = (self.status, body).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}
