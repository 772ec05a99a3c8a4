//! One client session's connection to one upstream MCP server, and the
//! relay that carries the upstream's own requests and notifications back to
//! that client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rmcp::ServiceExt as _;
use rmcp::model::{
    CancelledNotification, CancelledNotificationParam, ClientConfig, ClientRequest, ClientResult, ErrorData,
    ProgressToken, RequestId, ServerNotification, ServerPeerInfo, ServerRequest, ServerResult,
};
use rmcp::model::{GetExtensions as _, ServerNotification as Sn};
use rmcp::service::{
    InboundStreamOrigin, NotificationContext, OriginatingRequestId, Peer, PeerRequestOptions, RequestContext,
    RoleClient, RoleServer, RunningService, Service, ServiceError,
};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use tokio::sync::{Mutex, watch};

use super::{Endpoint, Resolved};

/// How long an upstream may take to start and answer `initialize`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected upstream; dropping it closes the connection (and ends a
/// stdio upstream's child process).
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) info: ServerPeerInfo,
    running: RunningService<RoleClient, Relay>,
    inflight: Arc<InFlight>,
}

impl Upstream {
    /// Start or reach the upstream and initialise it on behalf of a client
    /// that announced `client`; its requests and notifications go to
    /// `downstream` (none: the start-up check, which has no client).
    pub(crate) async fn connect(
        spec: &Resolved,
        client: ClientConfig,
        downstream: Option<Downstream>,
    ) -> anyhow::Result<Self> {
        let name = spec.name.clone();
        let inflight = Arc::new(InFlight::default());
        let relay = Relay { downstream, inflight: Arc::clone(&inflight), client };
        let started = async {
            match &spec.endpoint {
                Endpoint::Stdio { program, args } => {
                    let mut command = tokio::process::Command::new(program);
                    command.args(args);
                    let child = TokioChildProcess::new(command)
                        .with_context(|| format!("upstream `{name}`: cannot start `{program}`"))?;
                    relay
                        .serve(child)
                        .await
                        .with_context(|| format!("upstream `{name}` (`{program}`) did not initialise"))
                }
                Endpoint::Http { url, token } => {
                    let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
                    if let Some(token) = token {
                        config = config.auth_header(token.clone());
                    }
                    let transport = StreamableHttpClientTransport::from_config(config);
                    relay
                        .serve(transport)
                        .await
                        .with_context(|| format!("upstream `{name}` ({url}) did not initialise"))
                }
            }
        };
        let running = tokio::time::timeout(CONNECT_TIMEOUT, started)
            .await
            .map_err(|_| anyhow::anyhow!("upstream `{name}` did not initialise within {CONNECT_TIMEOUT:?}"))??;
        let Some(info) = running.peer_info() else {
            anyhow::bail!("upstream `{name}` sent no initialize result");
        };
        let info = (*info).clone();
        tracing::debug!(server = %name, "mcp-gateway: upstream initialised");
        Ok(Self { name, info, running, inflight })
    }

    /// The upstream's peer, for notifications.
    pub(crate) fn peer(&self) -> &Peer<RoleClient> {
        self.running.peer()
    }

    /// Forward one client request. The upstream is told when the client
    /// cancels it, and its progress notifications reach the client under
    /// the client's own progress token.
    pub(crate) async fn request(
        &self,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, ServiceError> {
        let client_token = context.meta.get_progress_token();
        // Held while sending so a progress notification cannot arrive
        // before the request is known.
        let mut pending = self.inflight.pending.lock().await;
        let handle = self.peer().send_cancellable_request(request, PeerRequestOptions::no_options()).await?;
        let id = handle.id.clone();
        pending.insert(
            id.clone(),
            Pending { downstream: context.id.clone(), client_token, upstream_token: handle.progress_token.clone() },
        );
        drop(pending);
        let result = tokio::select! {
            r = handle.await_response() => r,
            () = context.ct.cancelled() => {
                let _ = self.peer().send_notification(cancelled(id.clone(), "cancelled by the MCP client").into()).await;
                Err(ServiceError::Cancelled { reason: Some("cancelled by the client".to_owned()) })
            }
        };
        self.inflight.pending.lock().await.remove(&id);
        result
    }

    /// Close the connection and wait for it to end.
    pub(crate) async fn close(mut self) {
        let _ = self.running.close_with_timeout(Duration::from_secs(5)).await;
    }
}

/// Requests in flight to one upstream on behalf of the client.
#[derive(Default)]
struct InFlight {
    pending: Mutex<HashMap<RequestId, Pending>>,
}

struct Pending {
    /// The client's request it serves.
    downstream: RequestId,
    /// The client's progress token, if it asked for progress.
    client_token: Option<ProgressToken>,
    /// The token the gateway gave the upstream instead.
    upstream_token: ProgressToken,
}

impl InFlight {
    /// The client's token for a progress notification of the upstream.
    async fn client_token(&self, upstream: &ProgressToken) -> Option<ProgressToken> {
        let pending = self.pending.lock().await;
        pending.values().find(|p| &p.upstream_token == upstream).and_then(|p| p.client_token.clone())
    }

    /// The client request an upstream request belongs to: the one whose
    /// response stream it arrived on (Streamable HTTP), else the only one in
    /// flight (stdio has no streams to tell them apart).
    async fn downstream_of(&self, origin: Option<&InboundStreamOrigin>) -> Option<RequestId> {
        let pending = self.pending.lock().await;
        match origin {
            Some(InboundStreamOrigin::OutboundRequest(id)) => pending.get(id).map(|p| p.downstream.clone()),
            Some(InboundStreamOrigin::Unassociated) => None,
            None if pending.len() == 1 => pending.values().next().map(|p| p.downstream.clone()),
            _ => None,
        }
    }
}

/// The client an upstream connection serves.
pub(crate) struct Downstream {
    pub(crate) peer: Peer<RoleServer>,
    /// True once the client has finished `initialize`: an upstream speaks
    /// as soon as its own handshake is done (roots/list, logging), which is
    /// before the client has its `initialize` answer.
    pub(crate) ready: watch::Receiver<bool>,
}

impl Downstream {
    /// The client's peer once it is initialised; `None` if it never is.
    async fn peer(&self) -> Option<Peer<RoleServer>> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(CONNECT_TIMEOUT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Some(self.peer.clone()),
            _ => None,
        }
    }
}

/// The client side of one upstream connection: answers the upstream's
/// requests by asking the gateway's client, and passes its notifications on.
struct Relay {
    downstream: Option<Downstream>,
    inflight: Arc<InFlight>,
    /// What the gateway announces to the upstream: the client's own
    /// capabilities and identity.
    client: ClientConfig,
}

impl Service<RoleClient> for Relay {
    async fn handle_request(
        &self,
        request: ServerRequest,
        context: RequestContext<RoleClient>,
    ) -> Result<ClientResult, ErrorData> {
        if let ServerRequest::PingRequest(_) = request {
            return Ok(ClientResult::empty(()));
        }
        let mut request = request;
        let origin = self.inflight.downstream_of(request.extensions().get::<InboundStreamOrigin>()).await;
        request.extensions_mut().remove::<OriginatingRequestId>();
        if let Some(id) = origin {
            // The client's Streamable HTTP transport delivers it on that
            // request's response stream.
            request.extensions_mut().insert(OriginatingRequestId(id));
        }
        let downstream = match &self.downstream {
            Some(d) => d.peer().await,
            None => None,
        };
        let Some(downstream) = downstream else {
            return Err(ErrorData::internal_error("no MCP client is connected to the gateway", None));
        };
        to_client(downstream, request, context.ct.clone()).await.map_err(|e| match e {
            ServiceError::McpError(e) => e,
            other => ErrorData::internal_error(format!("the MCP client behind the gateway: {other}"), None),
        })
    }

    async fn handle_notification(
        &self,
        notification: ServerNotification,
        _context: NotificationContext<RoleClient>,
    ) -> Result<(), ErrorData> {
        let forward = match notification {
            // It cancels the upstream's own request to the gateway, which
            // rmcp turns into that request's cancellation token.
            Sn::CancelledNotification(_) => None,
            Sn::ProgressNotification(mut progress) => {
                self.inflight.client_token(&progress.params.progress_token).await.map(|token| {
                    progress.params.progress_token = token;
                    Sn::ProgressNotification(progress)
                })
            }
            other => Some(other),
        };
        let (Some(notification), Some(downstream)) = (forward, &self.downstream) else {
            return Ok(());
        };
        if let Some(peer) = downstream.peer().await
            && let Err(e) = peer.send_notification(notification).await
        {
            tracing::debug!(error = %e, "mcp-gateway: a notification could not reach the client");
        }
        Ok(())
    }

    fn get_info(&self) -> ClientConfig {
        self.client.clone()
    }
}

/// Send an upstream's request to the client and wait for the answer; the
/// client is told when the upstream cancels it.
async fn to_client(
    downstream: Peer<RoleServer>,
    request: ServerRequest,
    ct: tokio_util::sync::CancellationToken,
) -> Result<ClientResult, ServiceError> {
    // A task of its own: a request sent from inside a handler is tagged with
    // that handler's request id, which is the upstream's numbering and would
    // be taken for one of the client's own requests.
    let task = tokio::spawn(async move {
        let handle = downstream.send_cancellable_request(request, PeerRequestOptions::no_options()).await?;
        let id = handle.id.clone();
        tokio::select! {
            r = handle.await_response() => r,
            () = ct.cancelled() => {
                let _ = downstream.send_notification(cancelled(id, "cancelled by the upstream MCP server").into()).await;
                Err(ServiceError::Cancelled { reason: Some("cancelled by the upstream".to_owned()) })
            }
        }
    });
    task.await.unwrap_or_else(|e| Err(ServiceError::Cancelled { reason: Some(format!("relay task failed: {e}")) }))
}

fn cancelled(id: RequestId, reason: &str) -> CancelledNotification {
    CancelledNotification::new(CancelledNotificationParam::new(Some(id), Some(reason.to_owned())))
}
