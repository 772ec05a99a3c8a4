//! The Streamable HTTP listener for MCP clients (`--listen`).
//!
//! Every request must carry the client bearer token (compared in constant
//! time); there is no unauthenticated mode, on loopback or elsewhere. Bodies
//! are capped. Each MCP session (`Mcp-Session-Id`) is its own [`Gateway`]:
//! its own upstream connections and its own Arbiter session id, so receipts
//! of different clients are never mixed. `Host` headers are checked against
//! the loopback names (and `--allowed-host`) to keep a browser page that
//! rebinds a DNS name to 127.0.0.1 out; on a non-loopback address without
//! `--allowed-host` the token alone guards the listener.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use subtle::ConstantTimeEq as _;

use super::ListenArgs;
use super::proxy::{Gateway, Shared};

/// The path clients connect to.
pub(crate) const PATH: &str = "/mcp";

/// Shortest client token accepted: a guessable token is no guard.
const MIN_TOKEN_LEN: usize = 16;

/// Serve clients on `listen.addr` until SIGINT / SIGTERM.
pub(crate) async fn serve(mut shared: Shared, listen: ListenArgs) -> anyhow::Result<()> {
    let token = listen.client_token.as_deref().map(str::trim).unwrap_or_default().to_owned();
    if token.is_empty() {
        anyhow::bail!(
            "no client token for the listener (set ARBITER_MCP_CLIENT_TOKEN or --client-token-file); \
             the gateway never listens without one"
        );
    }
    if token.len() < MIN_TOKEN_LEN {
        anyhow::bail!("the client token is shorter than {MIN_TOKEN_LEN} characters");
    }
    shared.limit_sessions(listen.max_sessions);
    // A mistake in an upstream stops the gateway now, not at a client's
    // first session.
    shared.check_upstreams().await?;
    let shared = Arc::new(shared);

    let mut config = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(listen.max_body_bytes)
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    if listen.addr.ip().is_loopback() {
        let mut hosts = config.allowed_hosts.clone();
        hosts.extend(listen.allowed_hosts.iter().cloned());
        config = config.with_allowed_hosts(hosts);
    } else if listen.allowed_hosts.is_empty() {
        config = config.disable_allowed_hosts();
    } else {
        config = config.with_allowed_hosts(listen.allowed_hosts.clone());
    }
    let stop = config.cancellation_token.clone();
    let factory = {
        let shared = Arc::clone(&shared);
        move || Ok(Gateway::new(Arc::clone(&shared), uuid::Uuid::now_v7().to_string()))
    };
    let mcp = StreamableHttpService::new(factory, Arc::new(LocalSessionManager::default()), config);
    let app = axum::Router::new()
        .route_service(PATH, mcp)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(listen.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(Arc::new(token), require_token));

    let listener = tokio::net::TcpListener::bind(listen.addr)
        .await
        .with_context(|| format!("cannot listen on {}", listen.addr))?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({"event": "listening", "addr": addr.to_string(), "url": format!("http://{addr}{PATH}")})
    );
    tracing::info!(%addr, "mcp-gateway listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            crate::shutdown().await;
            stop.cancel();
        })
        .await?;
    Ok(())
}

/// Let a request through only with the client token.
async fn require_token(State(token): State<Arc<String>>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if presented.is_some_and(|t| bool::from(t.as_bytes().ct_eq(token.as_bytes()))) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "a valid bearer token is required\n").into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
