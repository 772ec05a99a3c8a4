//! The HTTP surface: hook ingress, the evaluate endpoint, the review API and
//! health probes. One router per resource, merged in [`app`]; each group sits
//! behind the auth layer of its role.
//!
//! Routes and roles:
//! - `POST /v1/hooks/{integration}[/{event}]`, `POST /v1/evaluate` — ingress token;
//! - `GET /v1/receipts`, `GET /v1/receipts/{id}`, `GET /v1/keys`,
//!   `GET /v1/sessions/{id}`, `GET /v1/sessions/{id}/verify`,
//!   `GET|PUT /v1/policies`, `POST /v1/policies/validate`,
//!   `GET /v1/policies/{hash}` — admin token;
//! - `GET /healthz`, `GET /readyz` — no auth.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceBuilder;

use crate::credentials::{ReceiptKey, Token};
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

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The decision pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Token of hook callers.
    pub ingress_token: Arc<Token>,
    /// Token of reviewers and admins.
    pub admin_token: Arc<Token>,
    /// Receipt signing key (public half served).
    pub key: Arc<ReceiptKey>,
    /// Largest hook body, in bytes.
    pub body_limit: usize,
    /// Concurrent requests before shedding.
    pub max_concurrent: usize,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Approvers and their tokens.
    pub approvers: Arc<Vec<Approver>>,
    /// Integrations whose callers authenticate otherwise than with the
    /// ingress token (e.g. an Entra ID JWT).
    pub integration_auth: Arc<std::collections::HashMap<String, crate::inbound::Verifier>>,
    /// Default-posture override from config, applied to uploaded packs too.
    pub default_posture: Option<crate::policy::Posture>,
}

/// Errors answered as `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("missing or invalid bearer token")]
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
    /// Internal failure; details go to the log only.
    #[error("internal error")]
    Internal(String),
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
        Self::Internal(e.to_string())
    }
}

/// The whole application router.
pub fn app(state: AppState) -> Router {
    let ingress = Router::new()
        .route("/v1/hooks/{integration}", post(hook))
        .route("/v1/hooks/{integration}/{event}", post(hook_event))
        .route("/v1/evaluate", post(evaluate))
        .layer(DefaultBodyLimit::max(state.body_limit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_ingress));
    let review = Router::new()
        .route("/v1/receipts", get(list_receipts))
        .route("/v1/receipts/{receipt_id}", get(get_receipt))
        .route("/v1/keys", get(keys))
        .route("/v1/sessions/{session_id}", get(session))
        .route("/v1/sessions/{session_id}/verify", get(verify_session))
        .route("/v1/policies", get(policies).put(upload_pack))
        .route("/v1/policies/validate", post(validate_pack))
        .route("/v1/policies/{hash}", get(stored_pack))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    // Approvers and admins: approvals, deferrals, evidence.
    let workflow = Router::new()
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}", get(get_approval))
        .route("/v1/approvals/{id}/approve", post(approve))
        .route("/v1/approvals/{id}/deny", post(deny))
        .route("/v1/deferrals", get(list_deferrals))
        .route("/v1/deferrals/{id}", get(get_deferral))
        .route("/v1/deferrals/{id}/resolve", post(resolve_deferral))
        .route("/v1/sessions/{session_id}/context", post(session_context))
        .layer(DefaultBodyLimit::max(WORKFLOW_BODY_LIMIT))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_reviewer));
    let probes = Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz));
    let bounds = ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(state.max_concurrent)
        .timeout(state.request_timeout);
    Router::new()
        .merge(ingress)
        .merge(review)
        .merge(workflow)
        .merge(probes)
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .layer(bounds)
        .with_state(state)
}

async fn overloaded(err: BoxError) -> ApiError {
    if err.is::<tower::timeout::error::Elapsed>() {
        ApiError::Unavailable("request timed out".to_owned())
    } else {
        ApiError::Unavailable("server overloaded, retry later".to_owned())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn require_ingress(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // `/v1/hooks/<integration>[/<event>]` of an integration with its own
    // authentication accepts that, and only that.
    let integration =
        request.uri().path().strip_prefix("/v1/hooks/").map(|rest| rest.split('/').next().unwrap_or(rest));
    if let Some(verifier) = integration.and_then(|i| state.integration_auth.get(i)) {
        return match verifier.verify(bearer(request.headers())).await {
            Ok(_) => next.run(request).await,
            Err(e) => {
                tracing::warn!(integration = integration.unwrap_or_default(), error = %e, "hook caller refused");
                ApiError::Unauthorized.into_response()
            }
        };
    }
    match bearer(request.headers()) {
        Some(t) if state.ingress_token.matches(t) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

/// Who called an approver route.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The admin token: may resolve anything.
    Admin,
    /// An approver: may resolve approvals of their groups.
    Approver {
        /// Their identity, recorded as the resolver.
        identity: String,
        /// Their approver groups.
        groups: Vec<String>,
    },
}

impl Caller {
    fn identity(&self) -> &str {
        match self {
            Self::Admin => "admin",
            Self::Approver { identity, .. } => identity,
        }
    }
}

/// One approver's credentials.
#[derive(Debug)]
pub struct Approver {
    /// Identity recorded when they resolve something.
    pub identity: String,
    /// Their token.
    pub token: Token,
    /// Groups they approve for (the `@approvers` of policies).
    pub groups: Vec<String>,
}

async fn require_reviewer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let caller = match bearer(request.headers()) {
        Some(t) if state.admin_token.matches(t) => Some(Caller::Admin),
        Some(t) => state
            .approvers
            .iter()
            .find(|a| a.token.matches(t))
            .map(|a| Caller::Approver { identity: a.identity.clone(), groups: a.groups.clone() }),
        None => None,
    };
    match caller {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

async fn require_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match bearer(request.headers()) {
        Some(t) if state.admin_token.matches(t) => next.run(request).await,
        _ => ApiError::Unauthorized.into_response(),
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    govern(state, integration, String::new(), method, headers, body).await
}

async fn hook_event(
    state: State<AppState>,
    Path((integration, event)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    govern(state, integration, format!("/{event}"), method, headers, body).await
}

async fn govern(
    State(state): State<AppState>,
    integration: String,
    path: String,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !state.pipeline.has_integration(&integration) {
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

async fn evaluate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body_or_error(body, state.body_limit)?;
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    match state.pipeline.evaluate(&value).await {
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
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
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
    };
    let store = state.pipeline.store().clone();
    let page = tokio::task::spawn_blocking(move || store.list_receipts(&query))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({"receipts": page.receipts, "next_cursor": page.next_seq.map(encode_cursor)})))
}

async fn get_receipt(State(state): State<AppState>, Path(receipt_id): Path<String>) -> Result<Json<Value>, ApiError> {
    state
        .pipeline
        .store()
        .receipt(&receipt_id)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no receipt `{receipt_id}`")))
}

async fn keys(State(state): State<AppState>) -> Json<Value> {
    Json(keys_document(&state.key))
}

async fn audit(state: &AppState, session_id: String) -> Result<crate::store::SessionAudit, ApiError> {
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

async fn session(State(state): State<AppState>, Path(session_id): Path<String>) -> Result<Json<Value>, ApiError> {
    let a = audit(&state, session_id.clone()).await?;
    Ok(Json(json!({
        "session_id": session_id,
        "summary": a.summary,
        "entries": a.entries,
        "verification": {"intact": a.broken.is_none(), "first_broken": a.broken},
    })))
}

async fn verify_session(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let a = audit(&state, session_id.clone()).await?;
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

async fn policies(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.pipeline.store();
    let active = state.pipeline.pdp();
    let uploaded = store.active_pack()?.is_some_and(|h| h == active.pack().identity().hash);
    Ok(Json(json!({"active": pack_summary(&active), "active_is_uploaded": uploaded, "uploaded": store.packs()?})))
}

async fn validate_pack(State(state): State<AppState>, Json(upload): Json<PackUpload>) -> Result<Json<Value>, ApiError> {
    let (pdp, tests) = check_pack(&state, upload.into_files()?).await?;
    Ok(Json(json!({"valid": true, "pack": pack_summary(&pdp), "tests_passed": tests})))
}

async fn upload_pack(State(state): State<AppState>, Json(upload): Json<PackUpload>) -> Result<Json<Value>, ApiError> {
    let files = upload.into_files()?;
    let (pdp, tests) = check_pack(&state, files.clone()).await?;
    let identity = pdp.pack().identity().clone();
    let document = json!({
        "identity": identity,
        "uploaded_at": crate::model::now_rfc3339(),
        "files": files.iter().map(|(p, c)| (p.clone(), Value::String(String::from_utf8_lossy(c).into_owned()))).collect::<serde_json::Map<_, _>>(),
    });
    // Durable first: the pack in force must survive a restart.
    state.pipeline.store().put_active_pack(&identity.hash, &document)?;
    let previous = state.pipeline.pdp();
    state.pipeline.swap_pdp(std::sync::Arc::new(pdp));
    tracing::info!(pack = %identity.pack, version = %identity.version, hash = %identity.hash, "policy pack swapped in");
    Ok(Json(
        json!({"active": pack_summary(&state.pipeline.pdp()), "previous": pack_summary(&previous), "tests_passed": tests}),
    ))
}

async fn stored_pack(State(state): State<AppState>, Path(hash): Path<String>) -> Result<Json<Value>, ApiError> {
    state
        .pipeline
        .store()
        .pack(&hash)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no uploaded pack `{hash}`")))
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
}

fn status_filter(q: &StatusQuery) -> Result<Option<HoldStatus>, ApiError> {
    match q.status.as_deref() {
        None | Some("") | Some("all") => Ok(None),
        Some(s) => serde_json::from_value(Value::String(s.to_owned())).map(Some).map_err(|_| {
            ApiError::BadRequest(format!("unknown status `{s}` (pending, approved, denied, expired, escalated)"))
        }),
    }
}

fn list_holds(state: &AppState, kind: HoldKind, q: &StatusQuery) -> Result<Json<Value>, ApiError> {
    let holds = state.pipeline.workflow().list(kind, status_filter(q)?);
    let key = format!("{}s", kind.name());
    Ok(Json(json!({ key: holds })))
}

fn get_hold(state: &AppState, kind: HoldKind, id: &str) -> Result<Json<Hold>, ApiError> {
    state
        .pipeline
        .workflow()
        .get(kind, id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no {} with id `{id}`", kind.name())))
}

async fn list_approvals(State(state): State<AppState>, Query(q): Query<StatusQuery>) -> Result<Json<Value>, ApiError> {
    list_holds(&state, HoldKind::Approval, &q)
}

async fn get_approval(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Hold>, ApiError> {
    get_hold(&state, HoldKind::Approval, &id)
}

async fn list_deferrals(State(state): State<AppState>, Query(q): Query<StatusQuery>) -> Result<Json<Value>, ApiError> {
    list_holds(&state, HoldKind::Deferral, &q)
}

async fn get_deferral(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Hold>, ApiError> {
    get_hold(&state, HoldKind::Deferral, &id)
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
    let hold = workflow
        .get(HoldKind::Approval, id)
        .ok_or_else(|| ApiError::NotFound(format!("no approval with id `{id}`")))?;
    if let Caller::Approver { identity, groups } = caller {
        // An approver decides only for the groups the policy named.
        if !hold.approvers.is_empty() && !hold.approvers.iter().any(|g| groups.contains(g)) {
            return Err(ApiError::Forbidden(format!(
                "`{identity}` is not in an approver group of this action ({})",
                hold.approvers.join(", ")
            )));
        }
    }
    let comment = clip_comment(verdict.comment);
    let (method, reason) = match decision {
        Decision::Allow => ("approved", format!("approved by {}", caller.identity())),
        _ => ("denied", format!("denied by {}", caller.identity())),
    };
    let reason = match &comment {
        Some(c) => format!("{reason}: {c}"),
        None => reason,
    };
    let verdict = crate::workflow::Verdict { decision, method, by: caller.identity(), comment, reason };
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
    let hold = workflow
        .get(HoldKind::Deferral, &id)
        .ok_or_else(|| ApiError::NotFound(format!("no deferral with id `{id}`")))?;
    if hold.status != HoldStatus::Pending {
        return Err(WorkflowError::Resolved("deferral", id, format!("{:?}", hold.status).to_lowercase()).into());
    }
    match (resolve.evidence, resolve.decision) {
        (Some(evidence), None) => {
            check_evidence(&evidence)?;
            state.pipeline.supply_evidence(&hold.session, evidence, "api", caller.identity()).await?;
        }
        (None, Some(decision @ (Decision::Allow | Decision::Deny))) => {
            let comment = clip_comment(resolve.comment);
            let reason = format!(
                "{} by {}{}",
                if decision == Decision::Allow { "allowed" } else { "denied" },
                caller.identity(),
                comment.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
            );
            let verdict = crate::workflow::Verdict { decision, method: "api", by: caller.identity(), comment, reason };
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
    get_hold(&state, HoldKind::Deferral, &id)
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
    check_evidence(&body.evidence)?;
    let resolved = state.pipeline.supply_evidence(&session_id, body.evidence, "context", caller.identity()).await?;
    let pending = state.pipeline.workflow().pending_deferrals(&session_id);
    Ok(Json(json!({"session_id": session_id, "resolved": resolved, "pending": pending})))
}
