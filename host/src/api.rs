//! The HTTP surface: hook ingress, the evaluate endpoint, the review API,
//! token management and health probes.
//!
//! Every route and the role it needs are declared once, in [`routes`]; [`app`]
//! builds the router from that table, so a route cannot exist without a
//! role, and `tests/api_roles.rs` walks the same table to prove each one
//! refuses missing (401) and insufficient (403) credentials. Roles and what
//! they imply are in [`crate::auth`].
//!
//! Tenants (see [`crate::tenants`]): a caller scoped to a tenant sees only
//! that tenant's receipts, sessions, approvals, deferrals, packs and tokens.
//! Asking for another tenant's by id answers 404 exactly as for an id that
//! does not exist, so existence is not revealed; lists are filtered. A
//! deployment-wide caller (the bootstrap admin token) sees every tenant and
//! may name one with `?tenant=`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{BoxError, Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceBuilder;

use crate::auth::{Authenticator, Caller, Role, Unauthenticated};
use crate::credentials::ReceiptKey;
use crate::model::Decision;
use crate::pipeline::{Pipeline, PipelineError};
use crate::plugins::wit;
use crate::receipts::keys_document;
use crate::store::{ReceiptQuery, parse_ms};
use crate::workflow::{Hold, HoldKind, HoldStatus, WorkflowError};

/// Largest page of receipts.
const MAX_PAGE: usize = 1000;
/// Page size when `limit` is absent.
const DEFAULT_PAGE: usize = 100;

/// How much longer than `ingress.request_timeout_ms` a hook connection may
/// take in all: the pipeline's own deadline plus the (≤ 1 s) wait for the
/// refusal receipt fit inside it, so the blocking reply always wins.
const HOOK_TRANSPORT_MARGIN: Duration = Duration::from_secs(2);

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The decision pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Who is calling: bootstrap tokens, API tokens, OIDC.
    pub auth: Arc<Authenticator>,
    /// Receipt signing key (public half served).
    pub key: Arc<ReceiptKey>,
    /// Largest hook body, in bytes.
    pub body_limit: usize,
    /// Concurrent requests on non-hook routes before shedding (hooks are
    /// bounded per integration by the pipeline).
    pub max_concurrent: usize,
    /// Whole-request timeout of non-hook routes.
    pub request_timeout: Duration,
    /// Integrations whose callers authenticate otherwise than with an
    /// ingress credential (an Entra ID JWT, an HMAC signature, a static
    /// bearer token).
    pub integration_auth: Arc<std::collections::HashMap<String, crate::inbound::Verifier>>,
    /// Default-posture override from config, applied to uploaded packs too.
    pub default_posture: Option<crate::policy::Posture>,
}

/// Errors answered as `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// Body over the limit.
    #[error("request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    /// Bad input.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed input that cannot be accepted (an invalid policy pack).
    #[error("{0}")]
    Unprocessable(String),
    /// Overloaded or timed out.
    #[error("{0}")]
    Unavailable(String),
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// The resource is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// A plugin bundle was refused; `code` names the check that failed.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// Stable code, e.g. `bad_signature`.
        code: &'static str,
        /// What failed.
        message: String,
    },
    /// Internal failure; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<crate::plugins::InstallError> for ApiError {
    fn from(e: crate::plugins::InstallError) -> Self {
        use crate::plugins::{InstallError, bundle::BundleError};
        let status = match &e {
            InstallError::Bundle(BundleError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            InstallError::Bundle(BundleError::Malformed(_)) => StatusCode::BAD_REQUEST,
            InstallError::Persist(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::Refused { status, code: e.code(), message: e.to_string() }
    }
}

impl From<crate::plugins::RegistryError> for ApiError {
    fn from(e: crate::plugins::RegistryError) -> Self {
        use crate::plugins::RegistryError;
        match e {
            RegistryError::NotFound(_) => Self::NotFound(e.to_string()),
            RegistryError::Conflict(m) => Self::Conflict(m),
            RegistryError::Persist(_) => Self::Unavailable(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_pack"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Refused { status, code, .. } => (*status, *code),
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let mut response =
            (status, Json(json!({"error": {"code": code, "message": self.to_string()}}))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        match e {
            WorkflowError::NotFound(..) => Self::NotFound(e.to_string()),
            WorkflowError::Resolved(..) => Self::Conflict(e.to_string()),
            WorkflowError::Forbidden(m) => Self::Forbidden(m),
            WorkflowError::Store(s) => Self::Unavailable(format!("the store refused the write: {s}")),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Log(crate::tlog::TlogError::OutOfRange(m)) => Self::BadRequest(m),
            e => Self::Internal(e.to_string()),
        }
    }
}

impl From<crate::tokens::TokenError> for ApiError {
    fn from(e: crate::tokens::TokenError) -> Self {
        use crate::tokens::TokenError;
        match e {
            TokenError::Invalid(m) => Self::BadRequest(m),
            TokenError::NotFound(_) => Self::NotFound(e.to_string()),
            TokenError::Full => Self::Conflict(e.to_string()),
            TokenError::Store(s) => Self::Unavailable(format!("the store refused the write: {s}")),
        }
    }
}

/// How a route is bounded against overload and slowness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounds {
    /// The server-wide layers: shed with 503 when overloaded or too slow.
    Server,
    /// Per integration, inside the pipeline: a refusal is the vendor's
    /// blocking reply with a receipt, because most vendors take a 503 (or no
    /// answer) as an ALLOW.
    Integration,
}

/// One route: where, who may call it, and what serves it.
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path pattern, axum syntax (`/v1/receipts/{receipt_id}`).
    pub path: &'static str,
    /// The role a caller needs; `None` only for the health probes.
    pub role: Option<Role>,
    /// How it is bounded.
    pub bounds: Bounds,
    handler: MethodRouter<AppState>,
}

impl Route {
    fn new(method: Method, path: &'static str, role: Role, handler: MethodRouter<AppState>) -> Self {
        Self { method, path, role: Some(role), bounds: Bounds::Server, handler }
    }

    fn public(path: &'static str, handler: MethodRouter<AppState>) -> Self {
        Self { method: Method::GET, path, role: None, bounds: Bounds::Server, handler }
    }

    fn hook(path: &'static str, handler: MethodRouter<AppState>) -> Self {
        Self { bounds: Bounds::Integration, ..Self::new(Method::POST, path, Role::Ingress, handler) }
    }

    /// Cap the body this route reads.
    fn limit(mut self, bytes: usize) -> Self {
        self.handler = self.handler.layer(DefaultBodyLimit::max(bytes));
        self
    }
}

/// Every route of the API and the role it needs, with the default bundle
/// cap. `hook_body_limit` is `ingress.body_limit_bytes`.
pub fn routes(hook_body_limit: usize) -> Vec<Route> {
    routes_with(hook_body_limit, crate::config::PluginLimits::default().max_bundle_bytes)
}

/// Every route of the API and the role it needs. `hook_body_limit` is
/// `ingress.body_limit_bytes`, `bundle_limit` `plugins.max_bundle_bytes`.
///
/// | role | may call |
/// |---|---|
/// | none | `/healthz`, `/readyz` |
/// | ingress | hooks, `/v1/evaluate` |
/// | auditor | receipts, keys, sessions, session verification |
/// | approver | approvals, deferrals, session evidence |
/// | admin | auditor's and approver's routes, policies, tokens, plugins |
pub fn routes_with(hook_body_limit: usize, bundle_limit: usize) -> Vec<Route> {
    use Method as M;
    use Role::{Admin, Approver, Auditor, Ingress};
    vec![
        Route::public("/healthz", get(healthz)),
        Route::public("/readyz", get(readyz)),
        // Agent platforms.
        Route::hook("/v1/hooks/{integration}", post(hook)).limit(hook_body_limit),
        Route::hook("/v1/hooks/{integration}/{event}", post(hook_event)).limit(hook_body_limit),
        Route::new(M::POST, "/v1/evaluate", Ingress, post(evaluate)).limit(hook_body_limit),
        // Read-only review.
        Route::new(M::GET, "/v1/receipts", Auditor, get(list_receipts)),
        Route::new(M::GET, "/v1/receipts/{receipt_id}", Auditor, get(get_receipt)),
        Route::new(M::GET, "/v1/receipts/{receipt_id}/proof", Auditor, get(receipt_proof)),
        Route::new(M::GET, "/v1/receipts/{receipt_id}/bundle", Auditor, get(receipt_bundle)),
        Route::new(M::GET, "/v1/log/checkpoint", Auditor, get(log_checkpoint)),
        Route::new(M::GET, "/v1/log/consistency", Auditor, get(log_consistency)),
        Route::new(M::GET, "/v1/keys", Auditor, get(keys)),
        Route::new(M::GET, "/v1/sessions/{session_id}", Auditor, get(session)),
        Route::new(M::GET, "/v1/sessions/{session_id}/verify", Auditor, get(verify_session)),
        // Approvals, deferrals, evidence.
        Route::new(M::GET, "/v1/approvals", Approver, get(list_approvals)),
        Route::new(M::GET, "/v1/approvals/{id}", Approver, get(get_approval)),
        Route::new(M::POST, "/v1/approvals/{id}/approve", Approver, post(approve)).limit(WORKFLOW_BODY_LIMIT),
        Route::new(M::POST, "/v1/approvals/{id}/deny", Approver, post(deny)).limit(WORKFLOW_BODY_LIMIT),
        Route::new(M::GET, "/v1/deferrals", Approver, get(list_deferrals)),
        Route::new(M::GET, "/v1/deferrals/{id}", Approver, get(get_deferral)),
        Route::new(M::POST, "/v1/deferrals/{id}/resolve", Approver, post(resolve_deferral)).limit(WORKFLOW_BODY_LIMIT),
        Route::new(M::POST, "/v1/sessions/{session_id}/context", Approver, post(session_context))
            .limit(WORKFLOW_BODY_LIMIT),
        // Administration.
        Route::new(M::GET, "/v1/policies", Admin, get(policies)),
        Route::new(M::PUT, "/v1/policies", Admin, put(upload_pack)),
        Route::new(M::POST, "/v1/policies/validate", Admin, post(validate_pack)),
        Route::new(M::GET, "/v1/policies/{hash}", Admin, get(stored_pack)),
        Route::new(M::GET, "/v1/tokens", Admin, get(list_tokens)),
        Route::new(M::POST, "/v1/tokens", Admin, post(create_token)).limit(WORKFLOW_BODY_LIMIT),
        Route::new(M::DELETE, "/v1/tokens/{id}", Admin, delete(revoke_token)),
        Route::new(M::GET, "/v1/plugins", Admin, get(list_plugins)),
        Route::new(M::GET, "/v1/plugins/{name}", Admin, get(get_plugin)),
        Route::new(M::PUT, "/v1/plugins/{name}", Admin, put(upload_plugin)).limit(bundle_limit),
        Route::new(M::DELETE, "/v1/plugins/{name}", Admin, delete(delete_plugin)),
        Route::new(M::POST, "/v1/plugins/{name}/rollback", Admin, post(rollback_plugin)),
    ]
}

/// The whole application router, built from [`routes`].
pub fn app(state: AppState) -> Router {
    let mut server = Router::new();
    let mut integration = Router::new();
    for route in routes_with(state.body_limit, state.pipeline.plugins().max_bundle_bytes()) {
        let handler = match route.role {
            Some(role) => route.handler.route_layer(middleware::from_fn_with_state((state.clone(), role), authorize)),
            None => route.handler,
        };
        match route.bounds {
            Bounds::Server => server = server.route(route.path, handler),
            Bounds::Integration => integration = integration.route(route.path, handler),
        }
    }
    let bounds = ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(state.max_concurrent)
        .timeout(state.request_timeout);
    // Hooks are bounded by the pipeline (vendor's blocking reply). This outer
    // guard, looser than those bounds so they refuse first, only stops
    // connections that never become a governed request: bodies that do not
    // arrive, or more connections than the pipeline could ever admit.
    let transport = ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(state.max_concurrent.saturating_mul(2))
        .timeout(state.request_timeout + HOOK_TRANSPORT_MARGIN);
    Router::new()
        .merge(server.layer(bounds))
        .merge(integration.layer(transport))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .with_state(state)
}

async fn overloaded(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable("request timed out".to_owned())
    } else {
        ApiError::Unavailable("server overloaded, retry later".to_owned())
    }
}

/// The auth layer of a route needing `role`: 401 without a credential any
/// source accepts, 403 with one whose roles do not grant `role`. The caller
/// travels to the handler as a request extension.
async fn authorize(State((state, role)): State<(AppState, Role)>, mut request: Request, next: Next) -> Response {
    if role == Role::Ingress {
        // The integration as the router matched it (percent-decoded), so an
        // encoded name cannot dodge the integration's own authentication.
        let (mut parts, body) = request.into_parts();
        let integration = axum::RequestPartsExt::extract::<Path<std::collections::HashMap<String, String>>>(&mut parts)
            .await
            .ok()
            .and_then(|Path(mut params)| params.remove("integration"));
        request = Request::from_parts(parts, body);
        if let Some(integration) = integration
            && let Some(verifier) = state.integration_auth.get(&integration)
        {
            return integration_auth(&state, verifier, &integration, request, next).await;
        }
    }
    let caller = match state.auth.caller(request.headers()).await {
        // A token of a tenant since removed from config acts nowhere.
        Ok(c) if c.tenant.as_deref().is_none_or(|t| state.pipeline.tenancy().exists(t)) => c,
        Ok(c) => {
            tracing::warn!(identity = %c.identity, tenant = ?c.tenant, "credential of an unconfigured tenant refused");
            return ApiError::Unauthorized.into_response();
        }
        Err(Unauthenticated::Missing | Unauthenticated::Invalid) => return ApiError::Unauthorized.into_response(),
    };
    if !caller.may(role) {
        let held: Vec<&str> = caller.roles.iter().map(|r| r.as_str()).collect();
        return ApiError::Forbidden(format!(
            "this route needs the {} role; the credential has: {}",
            role.as_str(),
            if held.is_empty() { "no role".to_owned() } else { held.join(", ") }
        ))
        .into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// An integration with its own authentication accepts that, and only that.
/// A signature covers the body, so it is read here (within the hook body
/// limit) and handed on.
async fn integration_auth(
    state: &AppState,
    verifier: &crate::inbound::Verifier,
    integration: &str,
    request: Request,
    next: Next,
) -> Response {
    let refused = |e: crate::inbound::AuthError| {
        tracing::warn!(%integration, error = %e, "hook caller refused");
        ApiError::Unauthorized.into_response()
    };
    if !verifier.needs_body() {
        return match verifier.verify(request.headers(), &[]).await {
            Ok(_) => next.run(request).await,
            Err(e) => refused(e),
        };
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, state.body_limit).await else {
        return ApiError::TooLarge(state.body_limit).into_response();
    };
    match verifier.verify(&parts.headers, &bytes).await {
        Ok(_) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(e) => refused(e),
    }
}

fn body_or_error(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(limit),
        _ => ApiError::BadRequest(format!("cannot read request body: {e}")),
    })
}

/// Headers a plugin never sees: credentials of the hook caller.
const HIDDEN_HEADERS: [&str; 4] = ["authorization", "cookie", "proxy-authorization", "x-api-key"];

async fn hook(
    state: State<AppState>,
    Path(integration): Path<String>,
    method: Method,
    headers: HeaderMap,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller.map(|axum::Extension(c)| c);
    govern(state, integration, String::new(), method, headers, caller, body).await
}

async fn hook_event(
    state: State<AppState>,
    Path((integration, event)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller.map(|axum::Extension(c)| c);
    govern(state, integration, format!("/{event}"), method, headers, caller, body).await
}

/// `caller` is `None` when the integration's own authentication admitted
/// the request (it then acts in the integration's tenant by construction).
async fn govern(
    State(state): State<AppState>,
    integration: String,
    path: String,
    method: Method,
    headers: HeaderMap,
    caller: Option<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Another tenant's integration is answered like one that does not exist.
    let tenant = state.pipeline.tenancy().of_integration(&integration);
    if !state.pipeline.has_integration(&integration) || caller.is_some_and(|c| !c.sees(tenant)) {
        return Err(ApiError::NotFound(format!("unknown integration `{integration}`")));
    }
    let body = body_or_error(body, state.body_limit)?;
    // Every vendor we govern speaks JSON; reject broken JSON precisely here
    // rather than as an opaque plugin rejection. An empty body (Copilot
    // Studio's `validate`) is the plugin's to judge.
    if !body.is_empty()
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return Err(ApiError::BadRequest(format!("malformed JSON body: {e}")));
    }
    let request = wit::HttpRequest {
        method: method.as_str().to_owned(),
        path,
        headers: headers
            .iter()
            .filter(|(name, _)| !HIDDEN_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    let reply = state.pipeline.handle_hook(&integration, request).await.map_err(|e| match e {
        PipelineError::UnknownIntegration(_) => ApiError::NotFound(e.to_string()),
        PipelineError::PluginMissing(_) | PipelineError::Unrecorded(_) => ApiError::Unavailable(e.to_string()),
        PipelineError::InvalidAction(m) => ApiError::BadRequest(m),
    })?;
    let status = StatusCode::from_u16(reply.response.status).unwrap_or(StatusCode::OK);
    let mut response = Response::builder()
        .status(status)
        .body(Body::from(reply.response.body))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let out = response.headers_mut();
    for (name, value) in &reply.response.headers {
        // Framing headers are the server's business, not the plugin's.
        let lower = name.to_ascii_lowercase();
        if matches!(lower.as_str(), "content-length" | "transfer-encoding" | "connection")
            || lower.starts_with("x-arbiter-")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(lower), HeaderValue::try_from(value.as_str())) {
            out.append(n, v);
        }
    }
    if let Some(id) = reply.receipt_id.and_then(|id| HeaderValue::try_from(id).ok()) {
        out.insert("x-arbiter-receipt-id", id);
    }
    if let Some(d) = reply.decision {
        out.insert("x-arbiter-decision", HeaderValue::from_static(d.as_str()));
    }
    Ok(response)
}

/// The caller's tenant decides (a deployment-wide ingress token: `default`).
async fn evaluate(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_error(body, state.body_limit)?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let tenant = caller.tenant.as_deref().unwrap_or(crate::tenants::DEFAULT);
    match state.pipeline.evaluate(tenant, &value).await {
        Ok(reply) => Ok(Json(reply).into_response()),
        Err(PipelineError::InvalidAction(m)) => Err(ApiError::BadRequest(m)),
        Err(e @ PipelineError::Unrecorded(_)) => Err(ApiError::Unavailable(e.to_string())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    session_id: Option<String>,
    agent: Option<String>,
    decision: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    tenant: Option<String>,
}

/// `?tenant=` of the routes that act in one tenant.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantParam {
    tenant: Option<String>,
}

/// The tenant a request acts in: the caller's own, or for a deployment-wide
/// caller the one it names (`default` when it names none). Naming a tenant
/// the caller cannot see, or one that does not exist, is 404.
fn acting_tenant(state: &AppState, caller: &Caller, named: Option<&str>) -> Result<String, ApiError> {
    let tenant = named.or(caller.tenant.as_deref()).unwrap_or(crate::tenants::DEFAULT);
    if !state.pipeline.tenancy().exists(tenant) || !caller.sees(tenant) {
        return Err(ApiError::NotFound(format!("no tenant `{tenant}`")));
    }
    Ok(tenant.to_owned())
}

/// The tenant a listing is limited to: the caller's own; a deployment-wide
/// caller sees every tenant unless it names one.
fn listed_tenant(state: &AppState, caller: &Caller, named: Option<&str>) -> Result<Option<String>, ApiError> {
    match named {
        None => Ok(caller.tenant.clone()),
        Some(t) => acting_tenant(state, caller, Some(t)).map(Some),
    }
}

/// Whether the caller may see the stored session `session_id`.
fn sees_session(state: &AppState, caller: &Caller, session_id: &str) -> bool {
    caller.sees(state.pipeline.tenancy().of_session(session_id))
}

fn encode_cursor(seq: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b"c1".as_slice(), &seq.to_be_bytes()].concat())
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let (tag, seq) = raw.split_at_checked(2)?;
    (tag == b"c1").then_some(())?;
    Some(u64::from_be_bytes(seq.try_into().ok()?))
}

async fn list_receipts(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let tenant = listed_tenant(&state, &caller, p.tenant.as_deref())?;
    let time = |name: &str, v: &Option<String>| -> Result<Option<u64>, ApiError> {
        v.as_deref()
            .map(|s| parse_ms(s).ok_or_else(|| ApiError::BadRequest(format!("`{name}` must be an RFC 3339 timestamp"))))
            .transpose()
    };
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("`limit` must be between 1 and {MAX_PAGE}")));
    }
    let query = ReceiptQuery {
        decision: p
            .decision
            .as_deref()
            .map(|d| Decision::parse(d).ok_or_else(|| ApiError::BadRequest(format!("unknown decision `{d}`"))))
            .transpose()?,
        since_ms: time("since", &p.since)?,
        until_ms: time("until", &p.until)?,
        from_seq: p
            .cursor
            .as_deref()
            .map(|c| decode_cursor(c).ok_or_else(|| ApiError::BadRequest("invalid `cursor`".to_owned())))
            .transpose()?
            .unwrap_or(0),
        session_id: p.session_id,
        agent: p.agent,
        limit,
        tenant,
    };
    let store = state.pipeline.store().clone();
    let page = tokio::task::spawn_blocking(move || store.list_receipts(&query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({"receipts": page.receipts, "next_cursor": page.next_seq.map(encode_cursor)})))
}

async fn get_receipt(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(receipt_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    visible_receipt(&state, &caller, &receipt_id).map(Json)
}

/// The receipt, if it exists and is the caller's tenant's; another
/// tenant's is not found (a receipt, proof or bundle reveals nothing of it).
fn visible_receipt(state: &AppState, caller: &Caller, receipt_id: &str) -> Result<Value, ApiError> {
    state
        .pipeline
        .store()
        .receipt(receipt_id)?
        .filter(|r| caller.sees(crate::tenants::of_record(r)))
        .ok_or_else(|| ApiError::NotFound(format!("no receipt `{receipt_id}`")))
}

fn b64_hashes(hashes: &[crate::tlog::Hash]) -> Vec<String> {
    hashes.iter().map(|h| base64::engine::general_purpose::STANDARD.encode(h)).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProofParams {
    tree_size: Option<u64>,
}

/// `GET /v1/receipts/{id}/proof`: the receipt's inclusion proof in the tree
/// of `tree_size` leaves (default: the latest checkpoint's).
async fn receipt_proof(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(receipt_id): Path<String>,
    params: Result<Query<ProofParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    visible_receipt(&state, &caller, &receipt_id)?;
    let store = state.pipeline.store();
    let (seq, _) =
        store.receipt_leaf(&receipt_id)?.ok_or_else(|| ApiError::NotFound(format!("no receipt `{receipt_id}`")))?;
    let size = match p.tree_size {
        Some(size) => size,
        None => match store.latest_checkpoint()? {
            Some((size, _)) if size > seq => size,
            _ => {
                return Err(ApiError::Conflict(format!(
                    "receipt `{receipt_id}` is not in a checkpoint yet; retry after the next one, or GET its bundle"
                )));
            }
        },
    };
    let proof = store.inclusion_proof(seq, size)?;
    Ok(Json(json!({
        "receipt_id": receipt_id,
        "leaf_index": seq,
        "tree_size": size,
        "inclusion_proof": b64_hashes(&proof),
        "checkpoint": store.checkpoint(size)?,
    })))
}

/// `GET /v1/receipts/{id}/bundle`: the offline bundle, checkpointing first
/// when the latest checkpoint predates the receipt.
async fn receipt_bundle(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(receipt_id): Path<String>,
) -> Result<Response, ApiError> {
    use crate::receipt_bundle::{BundleError, assemble};
    visible_receipt(&state, &caller, &receipt_id)?;
    let store = state.pipeline.store();
    let keyring = [state.key.verifying_key()];
    let bundle = match assemble(store, &receipt_id, &keyring) {
        Err(BundleError::NotCheckpointed(_)) => {
            store.checkpoint_now().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
            assemble(store, &receipt_id, &keyring)
        }
        other => other,
    }
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .ok_or_else(|| ApiError::NotFound(format!("no receipt `{receipt_id}`")))?;
    let bytes = bundle.to_bytes().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

/// `GET /v1/log/checkpoint`: the latest signed checkpoint note.
async fn log_checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (_, note) = state
        .pipeline
        .store()
        .latest_checkpoint()?
        .ok_or_else(|| ApiError::NotFound("no checkpoint yet: the log is empty or young".to_owned()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyParams {
    first: u64,
    second: Option<u64>,
}

/// `GET /v1/log/consistency?first=&second=`: proof that the tree of `first`
/// leaves is a prefix of the tree of `second` (default: latest checkpoint).
async fn log_consistency(
    State(state): State<AppState>,
    params: Result<Query<ConsistencyParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let store = state.pipeline.store();
    let second = match p.second {
        Some(s) => s,
        None => store
            .latest_checkpoint()?
            .map(|(s, _)| s)
            .ok_or_else(|| ApiError::NotFound("no checkpoint yet".to_owned()))?,
    };
    let proof = store.consistency_proof(p.first, second)?;
    Ok(Json(json!({
        "first": p.first,
        "second": second,
        "consistency_proof": b64_hashes(&proof),
        "checkpoint": store.checkpoint(second)?,
    })))
}

async fn keys(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut doc = keys_document(&state.key);
    // Checkpoints are signed notes: their verifier key names the log.
    let origin = state.pipeline.store().log_origin()?;
    doc["log"] = json!({
        "origin": origin,
        "note_verifier_keys": [crate::checkpoint::verifier_key(&origin, &state.key.verifying_key())],
    });
    Ok(Json(doc))
}

async fn audit(state: &AppState, caller: &Caller, session_id: String) -> Result<crate::store::SessionAudit, ApiError> {
    if !sees_session(state, caller, &session_id) {
        return Err(ApiError::NotFound(format!("no session `{session_id}`")));
    }
    let store = state.pipeline.store().clone();
    let id = session_id.clone();
    let audit = tokio::task::spawn_blocking(move || store.audit_session(&id))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    if audit.entries.is_empty() && audit.summary.entries == 0 {
        return Err(ApiError::NotFound(format!("no session `{session_id}`")));
    }
    Ok(audit)
}

async fn session(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = audit(&state, &caller, session_id.clone()).await?;
    Ok(Json(json!({
        "session_id": session_id,
        "summary": a.summary,
        "entries": a.entries,
        "verification": {"intact": a.broken.is_none(), "first_broken": a.broken},
    })))
}

async fn verify_session(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = audit(&state, &caller, session_id.clone()).await?;
    Ok(Json(json!({
        "session_id": session_id,
        "entries": a.entries.len(),
        "intact": a.broken.is_none(),
        "first_broken": a.broken,
    })))
}

/// Most files in an uploaded pack.
const MAX_PACK_FILES: usize = 1000;

/// A policy pack as uploaded: relative path → UTF-8 content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackUpload {
    files: std::collections::BTreeMap<String, String>,
}

impl PackUpload {
    fn into_files(self) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        if self.files.len() > MAX_PACK_FILES {
            return Err(ApiError::BadRequest(format!("a pack has at most {MAX_PACK_FILES} files")));
        }
        self.files
            .into_iter()
            .map(|(path, content)| {
                let ok = !path.is_empty()
                    && path.len() <= 200
                    && path.split('/').count() <= 3
                    && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
                    && path.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
                if ok {
                    Ok((path, content.into_bytes()))
                } else {
                    Err(ApiError::BadRequest(format!("invalid file path `{path}`")))
                }
            })
            .collect()
    }
}

/// Load a pack and run its own tests; refuse it unless both succeed.
async fn check_pack(state: &AppState, files: Vec<(String, Vec<u8>)>) -> Result<(crate::policy::Pdp, usize), ApiError> {
    use crate::policy::{Pdp, PolicyPack, testing};
    let posture = state.default_posture;
    tokio::task::spawn_blocking(move || {
        let pack = PolicyPack::from_files(files.clone()).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let pdp = Pdp::new(pack, posture);
        let results =
            testing::run(&pdp, &files, Some(&crate::pipeline::builtin_scores)).map_err(ApiError::Unprocessable)?;
        if results.iter().any(|r| !r.passed) {
            return Err(ApiError::Unprocessable(format!("the pack's own tests fail:\n{}", testing::table(&results))));
        }
        Ok((pdp, results.len()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

fn pack_summary(pdp: &crate::policy::Pdp) -> Value {
    let pack = pdp.pack();
    json!({
        "pack": pack.identity().pack, "version": pack.identity().version, "hash": pack.identity().hash,
        "policies": pack.len(), "has_schema": pack.has_schema(), "warnings": pack.warnings(),
        "default_posture": pdp.default_posture(),
    })
}

async fn policies(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<TenantParam>,
) -> Result<Json<Value>, ApiError> {
    let tenant = acting_tenant(&state, &caller, q.tenant.as_deref())?;
    let store = state.pipeline.store();
    let active = state.pipeline.tenant_pdp(&tenant);
    let key = crate::store::pack_key(&tenant, &active.pack().identity().hash);
    let uploaded = store.tenant_active_pack(&tenant)?.is_some_and(|k| k == key);
    let packs: Vec<Value> =
        store.packs()?.into_iter().filter(|p| crate::tenants::of_record(p) == tenant.as_str()).collect();
    Ok(Json(
        json!({"tenant": tenant, "active": pack_summary(&active), "active_is_uploaded": uploaded, "uploaded": packs}),
    ))
}

async fn validate_pack(State(state): State<AppState>, Json(upload): Json<PackUpload>) -> Result<Json<Value>, ApiError> {
    let (pdp, tests) = check_pack(&state, upload.into_files()?).await?;
    Ok(Json(json!({"valid": true, "pack": pack_summary(&pdp), "tests_passed": tests})))
}

/// Replaces the pack of the caller's tenant only.
async fn upload_pack(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<TenantParam>,
    Json(upload): Json<PackUpload>,
) -> Result<Json<Value>, ApiError> {
    let tenant = acting_tenant(&state, &caller, q.tenant.as_deref())?;
    let files = upload.into_files()?;
    let (pdp, tests) = check_pack(&state, files.clone()).await?;
    let identity = pdp.pack().identity().clone();
    let document = json!({
        "identity": identity,
        "tenant": tenant,
        "uploaded_at": crate::model::now_rfc3339(),
        "files": files.iter().map(|(p, c)| (p.clone(), Value::String(String::from_utf8_lossy(c).into_owned()))).collect::<serde_json::Map<_, _>>(),
    });
    // Durable first: the pack in force must survive a restart.
    state.pipeline.store().put_tenant_pack(&tenant, &identity.hash, &document)?;
    let previous = state.pipeline.tenant_pdp(&tenant);
    state.pipeline.swap_tenant_pdp(&tenant, std::sync::Arc::new(pdp));
    tracing::info!(%tenant, pack = %identity.pack, version = %identity.version, hash = %identity.hash, "policy pack swapped in");
    Ok(Json(json!({
        "tenant": tenant,
        "active": pack_summary(&state.pipeline.tenant_pdp(&tenant)),
        "previous": pack_summary(&previous),
        "tests_passed": tests,
    })))
}

async fn stored_pack(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<TenantParam>,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no uploaded pack `{hash}`"));
    let tenant = acting_tenant(&state, &caller, q.tenant.as_deref()).map_err(|_| not_found())?;
    state
        .pipeline
        .store()
        .pack(&crate::store::pack_key(&tenant, &hash))?
        .filter(|p| crate::tenants::of_record(p) == tenant.as_str())
        .map(Json)
        .ok_or_else(not_found)
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    role: Role,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// RFC 3339 expiry.
    #[serde(default)]
    expires_at: Option<String>,
    /// Its tenant: the caller's own (default); a deployment-wide admin may
    /// name any.
    #[serde(default)]
    tenant: Option<String>,
}

async fn create_token(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: CreateToken =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("invalid token request: {e}")))?;
    let tenant = acting_tenant(&state, &caller, body.tenant.as_deref())?;
    let tokens = state.auth.tokens().clone();
    let new = crate::tokens::NewToken {
        role: body.role,
        name: body.name,
        groups: body.groups,
        expires_at: body.expires_at,
        tenant,
    };
    let (record, secret) = tokio::task::spawn_blocking(move || tokens.create(new))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::info!(id = %record.id, role = record.role.as_str(), tenant = %record.tenant, by = %caller.identity, "API token created");
    let mut doc = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(o) = doc.as_object_mut() {
        o.remove("sha256");
        o.insert("token".to_owned(), Value::from(secret));
    }
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

async fn list_tokens(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<TenantParam>,
) -> Result<Json<Value>, ApiError> {
    let tenant = listed_tenant(&state, &caller, q.tenant.as_deref())?;
    Ok(Json(json!({"tokens": state.auth.tokens().list(tenant.as_deref())?})))
}

async fn revoke_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let tokens = state.auth.tokens().clone();
    let tenant = caller.tenant.clone();
    let record = tokio::task::spawn_blocking(move || tokens.revoke(&id, tenant.as_deref()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    tracing::info!(id = %record.id, by = %caller.identity, "API token revoked");
    let mut doc = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(o) = doc.as_object_mut() {
        o.remove("sha256");
    }
    Ok(Json(doc))
}

fn plugin_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("plugin name `{name}` must be 1 to 64 of [A-Za-z0-9_-]")))
    }
}

/// A plugin's versions and the integrations it serves.
fn plugin_json(state: &AppState, view: &crate::plugins::SlotView) -> Value {
    let name = &view.active.name;
    json!({
        "name": name,
        "active": view.active,
        "previous": view.previous,
        "fallback": view.fallback,
        "used_by": state.pipeline.integrations_using(name),
    })
}

/// Plugins serve every tenant, so with tenants configured only a
/// deployment-wide admin (the bootstrap `admin.token`) manages them.
fn deployment_wide(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    if caller.tenant.is_none() || !state.pipeline.tenancy().is_multi() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "plugins serve every tenant: only a deployment-wide admin may read or change them".to_owned(),
        ))
    }
}

async fn list_plugins(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    deployment_wide(&state, &caller)?;
    let plugins: Vec<Value> = state.pipeline.plugins().views().iter().map(|v| plugin_json(&state, v)).collect();
    Ok(Json(json!({"plugins": plugins, "supported_wit": crate::plugins::SUPPORTED_WIT})))
}

async fn get_plugin(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    deployment_wide(&state, &caller)?;
    plugin_name(&name)?;
    let view = state.pipeline.plugins().view(&name).ok_or_else(|| ApiError::NotFound(format!("no plugin `{name}`")))?;
    Ok(Json(plugin_json(&state, &view)))
}

async fn upload_plugin(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    deployment_wide(&state, &caller)?;
    plugin_name(&name)?;
    let plugins = state.pipeline.plugins().clone();
    let limit = plugins.max_bundle_bytes();
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::Refused {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "bundle_too_large",
            message: format!("the bundle exceeds the limit of {limit} bytes"),
        },
        _ => ApiError::BadRequest(format!("cannot read request body: {e}")),
    })?;
    // On its own task: a client that gives up (or the request timeout)
    // must not stop an install between its durable write and its swap.
    let task_name = name.clone();
    let installed =
        tokio::spawn(async move { plugins.install(Arc::from(body.as_ref()), Some(&task_name), "api").await })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
    let view = state.pipeline.plugins().view(&name).ok_or_else(|| ApiError::NotFound(format!("no plugin `{name}`")))?;
    let mut out = plugin_json(&state, &view);
    out["unchanged"] = Value::Bool(installed.unchanged);
    Ok(Json(out))
}

async fn rollback_plugin(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    deployment_wide(&state, &caller)?;
    plugin_name(&name)?;
    let view = state.pipeline.plugins().rollback(&name).await?;
    Ok(Json(plugin_json(&state, &view)))
}

async fn delete_plugin(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    deployment_wide(&state, &caller)?;
    plugin_name(&name)?;
    let used_by = state.pipeline.integrations_using(&name);
    let after = state.pipeline.plugins().remove(&name, &used_by).await?;
    Ok(Json(json!({"removed": name, "plugin": after.map(|v| plugin_json(&state, &v))})))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.pipeline.store().is_healthy() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": "store refuses writes"})))
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    // A cursor round-trips and garbage is refused.
    fn cursor_round_trips() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("not-a-cursor"), None);
    }
}

/// Largest body of an approve / resolve / evidence call.
const WORKFLOW_BODY_LIMIT: usize = 64 * 1024;

/// Longest approver comment kept.
const MAX_COMMENT: usize = 2000;

#[derive(Debug, Deserialize)]
struct StatusQuery {
    status: Option<String>,
    tenant: Option<String>,
}

fn status_filter(q: &StatusQuery) -> Result<Option<HoldStatus>, ApiError> {
    match q.status.as_deref() {
        None | Some("") | Some("all") => Ok(None),
        Some(s) => serde_json::from_value(Value::String(s.to_owned())).map(Some).map_err(|_| {
            ApiError::BadRequest(format!("unknown status `{s}` (pending, approved, denied, expired, escalated)"))
        }),
    }
}

fn list_holds(state: &AppState, caller: &Caller, kind: HoldKind, q: &StatusQuery) -> Result<Json<Value>, ApiError> {
    let tenant = listed_tenant(state, caller, q.tenant.as_deref())?;
    let holds: Vec<Hold> = state
        .pipeline
        .workflow()
        .list(kind, status_filter(q)?)
        .into_iter()
        .filter(|h| tenant.as_deref().is_none_or(|t| h.tenant == t))
        .collect();
    let key = format!("{}s", kind.name());
    Ok(Json(json!({ key: holds })))
}

/// A hold the caller may see; another tenant's is not found.
fn visible_hold(state: &AppState, caller: &Caller, kind: HoldKind, id: &str) -> Result<Hold, ApiError> {
    state
        .pipeline
        .workflow()
        .get(kind, id)
        .filter(|h| caller.sees(&h.tenant))
        .ok_or_else(|| ApiError::NotFound(format!("no {} with id `{id}`", kind.name())))
}

fn get_hold(state: &AppState, caller: &Caller, kind: HoldKind, id: &str) -> Result<Json<Hold>, ApiError> {
    visible_hold(state, caller, kind, id).map(Json)
}

async fn list_approvals(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Value>, ApiError> {
    list_holds(&state, &caller, HoldKind::Approval, &q)
}

async fn get_approval(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Hold>, ApiError> {
    get_hold(&state, &caller, HoldKind::Approval, &id)
}

async fn list_deferrals(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Value>, ApiError> {
    list_holds(&state, &caller, HoldKind::Deferral, &q)
}

async fn get_deferral(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Hold>, ApiError> {
    get_hold(&state, &caller, HoldKind::Deferral, &id)
}

/// Body of approve / deny.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproverVerdict {
    #[serde(default)]
    comment: Option<String>,
}

fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn clip_comment(comment: Option<String>) -> Option<String> {
    comment.map(|c| c.chars().take(MAX_COMMENT).collect::<String>()).filter(|c| !c.trim().is_empty())
}

async fn approve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Json<Hold>, ApiError> {
    decide_approval(&state, &id, &caller, &body, Decision::Allow).await
}

async fn deny(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Json<Hold>, ApiError> {
    decide_approval(&state, &id, &caller, &body, Decision::Deny).await
}

async fn decide_approval(
    state: &AppState,
    id: &str,
    caller: &Caller,
    body: &Bytes,
    decision: Decision,
) -> Result<Json<Hold>, ApiError> {
    let verdict: ApproverVerdict = optional_json(body)?;
    let workflow = state.pipeline.workflow();
    let hold = visible_hold(state, caller, HoldKind::Approval, id)?;
    // An approver decides only for the groups the policy named; an admin
    // decides for any.
    if !caller.is_admin() && !hold.approvers.is_empty() && !hold.approvers.iter().any(|g| caller.groups.contains(g)) {
        return Err(ApiError::Forbidden(format!(
            "`{}` is not in an approver group of this action ({})",
            caller.identity,
            hold.approvers.join(", ")
        )));
    }
    let comment = clip_comment(verdict.comment);
    let (method, reason) = match decision {
        Decision::Allow => ("approved", format!("approved by {}", caller.identity.as_str())),
        _ => ("denied", format!("denied by {}", caller.identity.as_str())),
    };
    let reason = match &comment {
        Some(c) => format!("{reason}: {c}"),
        None => reason,
    };
    let verdict = crate::workflow::Verdict { decision, method, by: caller.identity.as_str(), comment, reason };
    let hold = workflow.resolve(HoldKind::Approval, id, verdict).await?;
    Ok(Json(hold))
}

/// Body of `POST /v1/deferrals/{id}/resolve`: evidence to re-decide on, or
/// a decision taken by the caller.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resolve {
    #[serde(default)]
    evidence: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    decision: Option<Decision>,
    #[serde(default)]
    comment: Option<String>,
}

async fn resolve_deferral(
    State(state): State<AppState>,
    Path(id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Json<Hold>, ApiError> {
    let resolve: Resolve = optional_json(&body)?;
    let workflow = state.pipeline.workflow().clone();
    let hold = visible_hold(&state, &caller, HoldKind::Deferral, &id)?;
    if hold.status != HoldStatus::Pending {
        return Err(WorkflowError::Resolved("deferral", id, format!("{:?}", hold.status).to_lowercase()).into());
    }
    match (resolve.evidence, resolve.decision) {
        (Some(evidence), None) => {
            check_evidence(&evidence)?;
            state.pipeline.supply_evidence(&hold.session, evidence, "api", caller.identity.as_str()).await?;
        }
        (None, Some(decision @ (Decision::Allow | Decision::Deny))) => {
            let comment = clip_comment(resolve.comment);
            let reason = format!(
                "{} by {}{}",
                if decision == Decision::Allow { "allowed" } else { "denied" },
                caller.identity.as_str(),
                comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
            );
            let verdict =
                crate::workflow::Verdict { decision, method: "api", by: caller.identity.as_str(), comment, reason };
            workflow.resolve(HoldKind::Deferral, &id, verdict).await?;
        }
        (None, Some(other)) => {
            return Err(ApiError::BadRequest(format!(
                "a deferral is resolved to ALLOW or DENY, not {}",
                other.as_str()
            )));
        }
        _ => return Err(ApiError::BadRequest("give exactly one of `evidence` and `decision`".to_owned())),
    }
    get_hold(&state, &caller, HoldKind::Deferral, &id)
}

/// Body of `POST /v1/sessions/{session_id}/context`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Evidence {
    evidence: serde_json::Map<String, Value>,
}

fn check_evidence(evidence: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    if evidence.is_empty() || evidence.len() > crate::context::MAX_EVIDENCE {
        return Err(ApiError::BadRequest(format!("`evidence` needs 1 to {} names", crate::context::MAX_EVIDENCE)));
    }
    for (name, value) in evidence {
        let ok_name = !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !ok_name {
            return Err(ApiError::BadRequest(format!("evidence name `{name}` must be [A-Za-z0-9_.-], at most 128")));
        }
        match value {
            Value::String(v) if v.len() <= 1024 => {}
            _ => return Err(ApiError::BadRequest(format!("evidence `{name}` must be a string of at most 1024 bytes"))),
        }
    }
    Ok(())
}

async fn session_context(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    Json(body): Json<Evidence>,
) -> Result<Json<Value>, ApiError> {
    if !sees_session(&state, &caller, &session_id) {
        return Err(ApiError::NotFound(format!("no session `{session_id}`")));
    }
    check_evidence(&body.evidence)?;
    let resolved =
        state.pipeline.supply_evidence(&session_id, body.evidence, "context", caller.identity.as_str()).await?;
    let pending = state.pipeline.workflow().pending_deferrals(&session_id);
    Ok(Json(json!({"session_id": session_id, "resolved": resolved, "pending": pending})))
}
