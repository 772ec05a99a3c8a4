//! The MCP server the client talks to: one per client session. It opens
//! the session's upstream connections at the client's `initialize`, routes
//! each request to the upstream that owns it, and sends `tools/call`
//! through Arbiter first.

// rmcp marks the 2025 protocol's logging and resource subscriptions
// deprecated (SEP-2577); the gateway speaks that protocol and forwards them.
#![expect(deprecated, reason = "forwards logging/setLevel and resources/subscribe of the 2025 protocol")]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientCapabilities, ClientConfig,
    ClientRequest, CompleteRequest, CompleteRequestParams, CompleteResult, ContentBlock, CustomNotification,
    CustomRequest, CustomResult, ErrorData, GetPromptRequest, GetPromptRequestParams, GetPromptResponse,
    Implementation, InitializeRequestParams, InitializeResult, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsRequest, ListToolsResult, PaginatedRequestParams, ProtocolVersion,
    ReadResourceRequest, ReadResourceRequestParams, ReadResourceResponse, Reference, ServerCapabilities, ServerConfig,
    ServerResult, SetLevelRequest, SetLevelRequestParams, SubscribeRequest, SubscribeRequestParams, UnsubscribeRequest,
    UnsubscribeRequestParams,
};
use rmcp::model::{ClientNotification, ErrorCode, RequestOptionalParam};
use rmcp::service::{NotificationContext, RequestContext, RoleServer, ServiceError};
use serde_json::{Map, Value, json};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use super::Resolved;
use super::arbiter::Arbiter;
use super::upstream::{Downstream, Upstream};

/// Most pages read from one upstream when listing for several upstreams.
const MAX_PAGES: usize = 64;

/// Most resource URIs remembered for routing `resources/read`.
const MAX_ROUTES: usize = 10_000;

/// What every client session shares.
pub(crate) struct Shared {
    upstreams: Vec<Resolved>,
    arbiter: Arbiter,
    /// Open client sessions, when they are limited (the HTTP listener).
    sessions: Option<Arc<Semaphore>>,
}

impl Shared {
    pub(crate) fn new(upstreams: Vec<Resolved>, arbiter: Arbiter) -> Self {
        Self { upstreams, arbiter, sessions: None }
    }

    /// Limit the client sessions open at once.
    pub(crate) fn limit_sessions(&mut self, max: usize) {
        self.sessions = Some(Arc::new(Semaphore::new(max.max(1))));
    }

    /// Connect to every upstream once and close again (a start-up check).
    pub(crate) async fn check_upstreams(&self) -> anyhow::Result<()> {
        for spec in &self.upstreams {
            let upstream = Upstream::connect(spec, gateway_client_info(), None).await?;
            upstream.close().await;
        }
        Ok(())
    }
}

fn gateway_client_info() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("arbiter-mcp-gateway", env!("CARGO_PKG_VERSION")),
    )
}

/// One client session.
pub(crate) struct Gateway {
    shared: Arc<Shared>,
    /// The Arbiter session its calls are recorded under.
    session: String,
    state: OnceCell<Session>,
    /// Set when the client sends `notifications/initialized`.
    ready: tokio::sync::watch::Sender<bool>,
}

/// A client session after `initialize`.
struct Session {
    upstreams: Vec<Upstream>,
    info: ServerConfig,
    /// The client's `clientInfo`, sent to Arbiter with every call.
    client: Value,
    /// Resource URIs (and URI template prefixes) by upstream, learnt from
    /// the lists, for routing with several upstreams.
    routes: std::sync::Mutex<HashMap<String, usize>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Gateway {
    pub(crate) fn new(shared: Arc<Shared>, session: String) -> Self {
        Self { shared, session, state: OnceCell::new(), ready: tokio::sync::watch::Sender::new(false) }
    }

    fn session(&self) -> Result<&Session, ErrorData> {
        self.state.get().ok_or_else(|| ErrorData::invalid_request("the session is not initialised", None))
    }

    /// Open the session's upstream connections on behalf of the client.
    async fn open(
        &self,
        params: &InitializeRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> anyhow::Result<Session> {
        let permit = match &self.shared.sessions {
            Some(s) => Some(
                Arc::clone(s)
                    .try_acquire_owned()
                    .map_err(|_| anyhow::anyhow!("the gateway has too many open sessions; try again later"))?,
            ),
            None => None,
        };
        // The upstreams see the client's own capabilities, so they only send
        // what it can answer; extensions the gateway does not carry are left out.
        let mut capabilities = params.capabilities.clone();
        capabilities.experimental = None;
        capabilities.extensions = None;
        let mut client = ClientConfig::new(capabilities, params.client_info.clone());
        client.protocol_version = handshake_version(&params.protocol_version);
        let connecting = self.shared.upstreams.iter().map(|spec| {
            let downstream = Downstream { peer: context.peer.clone(), ready: self.ready.subscribe() };
            Upstream::connect(spec, client.clone(), Some(downstream))
        });
        let upstreams = futures::future::try_join_all(connecting).await?;
        let mut info = merged_info(&upstreams, &client.protocol_version);
        let mut meta = match info.meta.take().map(serde_json::to_value) {
            Some(Ok(Value::Object(meta))) => meta,
            _ => Map::new(),
        };
        // Lets the client (and its operator) find its receipts.
        meta.insert("arbiter/session".to_owned(), Value::String(self.session.clone()));
        info.meta = serde_json::from_value(Value::Object(meta)).ok();
        let name = clip(&params.client_info.name);
        let version = clip(&params.client_info.version);
        tracing::info!(session = %self.session, client = %name, "mcp-gateway: client session opened");
        Ok(Session {
            upstreams,
            info,
            client: json!({"name": name, "version": version}),
            routes: std::sync::Mutex::new(HashMap::new()),
            _permit: permit,
        })
    }
}

/// The version a client's `initialize` can agree on: the gateway speaks
/// the protocol revisions that have the handshake.
fn handshake_version(requested: &ProtocolVersion) -> ProtocolVersion {
    if requested.has_initialize() { requested.clone() } else { ProtocolVersion::LATEST_WITH_INITIALIZE }
}

/// Client-supplied text cut to a length fit for records.
fn clip(s: &str) -> String {
    s.chars().take(128).collect()
}

/// What the gateway announces: with one upstream, its own `initialize`
/// result; with several, the union of what they offer, under the gateway's
/// name. Only the capabilities the gateway forwards are announced.
fn merged_info(upstreams: &[Upstream], requested: &ProtocolVersion) -> ServerConfig {
    const CARRIED: [&str; 5] = ["tools", "prompts", "resources", "logging", "completions"];
    let mut merged = Map::new();
    for u in upstreams {
        if let Ok(Value::Object(caps)) = serde_json::to_value(&u.info.capabilities) {
            for (k, v) in caps.into_iter().filter(|(k, _)| CARRIED.contains(&k.as_str())) {
                let slot = merged.entry(k).or_insert_with(|| Value::Object(Map::new()));
                union(slot, v);
            }
        }
    }
    let capabilities: ServerCapabilities = serde_json::from_value(Value::Object(merged)).unwrap_or_default();
    // The oldest version any side speaks: the gateway passes messages through.
    let version = upstreams
        .iter()
        .map(|u| u.info.protocol_version.clone())
        .chain(std::iter::once(requested.clone()))
        .min_by(|a, b| a.as_str().cmp(b.as_str()))
        .unwrap_or_else(|| requested.clone());
    let mut info = ServerConfig::new(capabilities).with_protocol_version(version);
    match upstreams {
        [only] => {
            if let Some(server) = &only.info.server_info {
                info = info.with_server_info(server.clone());
            }
            info.instructions.clone_from(&only.info.instructions);
            info.meta.clone_from(&only.info.meta);
        }
        _ => {
            info = info.with_server_info(Implementation::new("arbiter-mcp-gateway", env!("CARGO_PKG_VERSION")));
            let text: Vec<String> = upstreams
                .iter()
                .filter_map(|u| {
                    u.info.instructions.as_ref().map(|i| format!("Tools `{}__*` ({}): {i}", u.name, u.name))
                })
                .collect();
            if !text.is_empty() {
                info.instructions = Some(text.join("\n\n"));
            }
        }
    }
    info
}

/// Merge capability objects: keys from both, flags true if either is.
fn union(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(slot) => union(slot, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Value::Bool(a), Value::Bool(b)) => *a = *a || b,
        _ => {}
    }
}

impl Session {
    fn single(&self) -> Option<&Upstream> {
        match self.upstreams.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }

    /// The upstream that owns a tool or prompt name, and its own name there.
    fn route(&self, name: &str) -> Result<(&Upstream, String), ErrorData> {
        if let Some(only) = self.single() {
            return Ok((only, name.to_owned()));
        }
        split_exposed(name)
            .and_then(|(server, own)| self.upstreams.iter().find(|u| u.name == server).map(|u| (u, own.to_owned())))
            .ok_or_else(|| {
                ErrorData::invalid_params(format!("`{}` names no upstream server's tool or prompt", clip(name)), None)
            })
    }

    /// The name the client sees for `name` of `server`.
    fn exposed(&self, server: &str, name: &str) -> String {
        if self.single().is_some() { name.to_owned() } else { format!("{server}__{name}") }
    }

    /// The upstream that serves a resource URI.
    fn resource(&self, uri: &str) -> Result<&Upstream, ErrorData> {
        if let Some(only) = self.single() {
            return Ok(only);
        }
        let routes = self.routes.lock().map_err(|_| ErrorData::internal_error("resource routes poisoned", None))?;
        let index = route_of(&routes, uri);
        drop(routes);
        index.and_then(|i| self.upstreams.get(i)).ok_or_else(|| {
            ErrorData::resource_not_found(
                format!("`{}` is in no upstream's resource list; list resources first", clip(uri)),
                None,
            )
        })
    }

    fn learn(&self, key: String, index: usize) {
        if let Ok(mut routes) = self.routes.lock()
            && (routes.len() < MAX_ROUTES || routes.contains_key(&key))
        {
            routes.insert(key, index);
        }
    }
}

/// `<server>__<name>` → (server, name). Server names never contain `__`,
/// so the first one ends the server name, whatever the name holds.
fn split_exposed(name: &str) -> Option<(&str, &str)> {
    name.split_once("__").filter(|(server, own)| !server.is_empty() && !own.is_empty())
}

/// The upstream of a resource URI: the one that listed it, else the one
/// whose URI template has the longest literal prefix of it (template
/// routes are stored as `<prefix>{`).
fn route_of(routes: &HashMap<String, usize>, uri: &str) -> Option<usize> {
    routes.get(uri).copied().or_else(|| {
        routes
            .iter()
            .filter(|(prefix, _)| prefix.ends_with('{') && uri.starts_with(prefix.trim_end_matches('{')))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, i)| *i)
    })
}

/// Turn an upstream failure into the error the client sees.
fn upstream_error(server: &str, e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        other => ErrorData::internal_error(format!("upstream MCP server `{server}`: {other}"), None),
    }
}

fn unexpected(server: &str, what: &str) -> ErrorData {
    ErrorData::internal_error(format!("upstream MCP server `{server}` answered {what} with something else"), None)
}

/// Every page of one list of an upstream.
async fn all_pages<T>(
    u: &Upstream,
    context: &RequestContext<RoleServer>,
    request: impl Fn(Option<PaginatedRequestParams>) -> ClientRequest,
    take: impl Fn(ServerResult) -> Option<(Vec<T>, Option<String>)>,
) -> Result<Vec<T>, ErrorData> {
    let mut items = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.take().map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
        let result = u.request(request(params), context).await.map_err(|e| upstream_error(&u.name, e))?;
        let (page, next) = take(result).ok_or_else(|| unexpected(&u.name, "a list request"))?;
        items.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return Ok(items),
        }
    }
    Ok(items)
}

impl ServerHandler for Gateway {
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        // The client's peer must not look like a 2026-07-28 one, which
        // forbids server-to-client requests, while the upstreams start.
        let mut peer = request.clone();
        peer.protocol_version = handshake_version(&request.protocol_version);
        context.peer.set_peer_info(peer.clone());
        let session = self
            .state
            .get_or_try_init(|| self.open(&request, &context))
            .await
            .map_err(|e| ErrorData::internal_error(format!("arbiter mcp-gateway: {e:#}"), None))?;
        peer.protocol_version = session.info.protocol_version.clone();
        context.peer.set_peer_info(peer);
        Ok(session.info.clone())
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        // The gateway relies on the `initialize` handshake and sessions.
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::LATEST_WITH_INITIALIZE))
    }

    fn get_info(&self) -> ServerConfig {
        match self.state.get() {
            Some(s) => s.info.clone(),
            None => ServerConfig::new(ServerCapabilities::default())
                .with_server_info(Implementation::new("arbiter-mcp-gateway", env!("CARGO_PKG_VERSION"))),
        }
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), ErrorData> {
        Ok(())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let s = self.session()?;
        if let Some(u) = s.single() {
            let r = u.request(ClientRequest::ListToolsRequest(list_request(request)), &context).await;
            return match r.map_err(|e| upstream_error(&u.name, e))? {
                ServerResult::ListToolsResult(r) => Ok(r),
                _ => Err(unexpected(&u.name, "tools/list")),
            };
        }
        let mut tools = Vec::new();
        for u in s.upstreams.iter().filter(|u| u.info.capabilities.tools.is_some()) {
            let page = all_pages(
                u,
                &context,
                |p| ClientRequest::ListToolsRequest(list_request(p)),
                |r| match r {
                    ServerResult::ListToolsResult(r) => Some((r.tools, r.next_cursor)),
                    _ => None,
                },
            )
            .await?;
            tools.extend(page.into_iter().map(|mut t| {
                t.name = Cow::Owned(s.exposed(&u.name, &t.name));
                t
            }));
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let s = self.session()?;
        let (u, tool) = s.route(&request.name)?;
        let mut params = request;
        params.name = Cow::Owned(tool.clone());
        Ok(CallToolResponse::Complete(self.call_tool_checked(s, u, &tool, params, &context).await))
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let s = self.session()?;
        if let Some(u) = s.single() {
            let r = u.request(ClientRequest::ListPromptsRequest(paged(request)), &context).await;
            return match r.map_err(|e| upstream_error(&u.name, e))? {
                ServerResult::ListPromptsResult(r) => Ok(r),
                _ => Err(unexpected(&u.name, "prompts/list")),
            };
        }
        let mut prompts = Vec::new();
        for u in s.upstreams.iter().filter(|u| u.info.capabilities.prompts.is_some()) {
            let page = all_pages(
                u,
                &context,
                |p| ClientRequest::ListPromptsRequest(paged(p)),
                |r| match r {
                    ServerResult::ListPromptsResult(r) => Some((r.prompts, r.next_cursor)),
                    _ => None,
                },
            )
            .await?;
            prompts.extend(page.into_iter().map(|mut p| {
                p.name = s.exposed(&u.name, &p.name);
                p
            }));
        }
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let s = self.session()?;
        let (u, own) = s.route(&request.name)?;
        let mut params = request;
        params.name = own;
        let r = u.request(ClientRequest::GetPromptRequest(GetPromptRequest::new(params)), &context).await;
        match r.map_err(|e| upstream_error(&u.name, e))? {
            ServerResult::GetPromptResult(r) => Ok(GetPromptResponse::Complete(r)),
            _ => Err(unexpected(&u.name, "prompts/get")),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let s = self.session()?;
        if let Some(u) = s.single() {
            let r = u.request(ClientRequest::ListResourcesRequest(paged(request)), &context).await;
            return match r.map_err(|e| upstream_error(&u.name, e))? {
                ServerResult::ListResourcesResult(r) => Ok(r),
                _ => Err(unexpected(&u.name, "resources/list")),
            };
        }
        let mut resources = Vec::new();
        for (i, u) in s.upstreams.iter().enumerate().filter(|(_, u)| u.info.capabilities.resources.is_some()) {
            let page = all_pages(
                u,
                &context,
                |p| ClientRequest::ListResourcesRequest(paged(p)),
                |r| match r {
                    ServerResult::ListResourcesResult(r) => Some((r.resources, r.next_cursor)),
                    _ => None,
                },
            )
            .await?;
            for r in &page {
                s.learn(r.uri.clone(), i);
            }
            resources.extend(page);
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let s = self.session()?;
        if let Some(u) = s.single() {
            let request = paged(request);
            let r = u.request(ClientRequest::ListResourceTemplatesRequest(request), &context).await;
            return match r.map_err(|e| upstream_error(&u.name, e))? {
                ServerResult::ListResourceTemplatesResult(r) => Ok(r),
                _ => Err(unexpected(&u.name, "resources/templates/list")),
            };
        }
        let mut templates = Vec::new();
        for (i, u) in s.upstreams.iter().enumerate().filter(|(_, u)| u.info.capabilities.resources.is_some()) {
            let page = all_pages(
                u,
                &context,
                |p| ClientRequest::ListResourceTemplatesRequest(paged(p)),
                |r| match r {
                    ServerResult::ListResourceTemplatesResult(r) => Some((r.resource_templates, r.next_cursor)),
                    _ => None,
                },
            )
            .await?;
            for t in &page {
                // Routed by the literal text before the first expression.
                let prefix = t.uri_template.split('{').next().unwrap_or_default();
                s.learn(format!("{prefix}{{"), i);
            }
            templates.extend(page);
        }
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let s = self.session()?;
        let u = s.resource(&request.uri)?;
        let r = u.request(ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request)), &context).await;
        match r.map_err(|e| upstream_error(&u.name, e))? {
            ServerResult::ReadResourceResult(r) => Ok(ReadResourceResponse::Complete(r)),
            _ => Err(unexpected(&u.name, "resources/read")),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let s = self.session()?;
        let u = s.resource(&request.uri)?;
        let r = u.request(ClientRequest::SubscribeRequest(SubscribeRequest::new(request)), &context).await;
        r.map(|_| ()).map_err(|e| upstream_error(&u.name, e))
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let s = self.session()?;
        let u = s.resource(&request.uri)?;
        let r = u.request(ClientRequest::UnsubscribeRequest(UnsubscribeRequest::new(request)), &context).await;
        r.map(|_| ()).map_err(|e| upstream_error(&u.name, e))
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let s = self.session()?;
        let mut params = request;
        let u = match &mut params.r#ref {
            Reference::Prompt(prompt) => {
                let (u, own) = s.route(&prompt.name)?;
                prompt.name = own;
                u
            }
            Reference::Resource(resource) => s.resource(&resource.uri)?,
            _ => return Err(ErrorData::invalid_params("unknown completion reference", None)),
        };
        let r = u.request(ClientRequest::CompleteRequest(CompleteRequest::new(params)), &context).await;
        match r.map_err(|e| upstream_error(&u.name, e))? {
            ServerResult::CompleteResult(r) => Ok(r),
            _ => Err(unexpected(&u.name, "completion/complete")),
        }
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let s = self.session()?;
        for u in s.upstreams.iter().filter(|u| u.info.capabilities.logging.is_some()) {
            let r = u.request(ClientRequest::SetLevelRequest(SetLevelRequest::new(request.clone())), &context).await;
            r.map_err(|e| upstream_error(&u.name, e))?;
        }
        Ok(())
    }

    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        let s = self.session()?;
        // With several upstreams there is no telling whose method it is.
        let Some(u) = s.single() else {
            return Err(ErrorData::new(ErrorCode::METHOD_NOT_FOUND, request.method.clone(), None));
        };
        match u
            .request(ClientRequest::CustomRequest(request), &context)
            .await
            .map_err(|e| upstream_error(&u.name, e))?
        {
            ServerResult::CustomResult(r) => Ok(r),
            _ => Err(unexpected(&u.name, "a custom request")),
        }
    }

    async fn on_initialized(&self, _context: NotificationContext<RoleServer>) {
        self.ready.send_replace(true);
    }

    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {
        self.broadcast(|| ClientNotification::RootsListChangedNotification(Default::default())).await;
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleServer>,
    ) {
        self.broadcast(|| ClientNotification::CustomNotification(notification.clone())).await;
    }
}

fn list_request(params: Option<PaginatedRequestParams>) -> ListToolsRequest {
    paged(params)
}

/// A list request with an optional cursor.
fn paged<M: Default>(params: Option<PaginatedRequestParams>) -> RequestOptionalParam<M, PaginatedRequestParams> {
    RequestOptionalParam { method: M::default(), params, extensions: Default::default() }
}

impl Gateway {
    /// Send a client notification to every upstream of the session.
    async fn broadcast(&self, notification: impl Fn() -> ClientNotification) {
        let Some(s) = self.state.get() else { return };
        for u in &s.upstreams {
            if let Err(e) = u.peer().send_notification(notification()).await {
                tracing::debug!(server = %u.name, error = %e, "mcp-gateway: notification not forwarded");
            }
        }
    }

    /// One `tools/call`: ask Arbiter, forward when let through, record the
    /// result. Never fails: every failure is an `isError` result.
    async fn call_tool_checked(
        &self,
        s: &Session,
        u: &Upstream,
        tool: &str,
        mut params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let call_id = context.id.to_string();
        let arguments = params.arguments.clone().map_or_else(|| Value::Object(Map::new()), Value::Object);
        let ask = json!({
            "event": "call",
            "session": self.session,
            "server": u.name,
            "tool": tool,
            "arguments": arguments,
            "call_id": call_id,
            "client": s.client,
        });
        let reply = match self.shared.arbiter.post(&ask).await {
            Ok(r) => r,
            Err(reason) => return refused(format!("arbiter mcp-gateway: {reason}; the call was not made")),
        };
        let reason = reply.get("reason").and_then(Value::as_str).unwrap_or("blocked by Arbiter").to_owned();
        match reply.get("decision").and_then(Value::as_str) {
            Some("allow") => {}
            Some("modify") => match reply.get("arguments") {
                Some(Value::Object(rewritten)) => params.arguments = Some(rewritten.clone()),
                _ => return refused(format!("Arbiter asked to modify the call without usable arguments: {reason}")),
            },
            Some(decision) => {
                tracing::info!(server = %u.name, tool = %tool, decision, "mcp-gateway: call blocked");
                return refused(reason);
            }
            None => return refused("arbiter mcp-gateway: Arbiter's reply has no decision; the call was not made"),
        }
        let result = match u.request(ClientRequest::CallToolRequest(CallToolRequest::new(params)), context).await {
            Ok(ServerResult::CallToolResult(r)) => r,
            Ok(_) => return refused("the upstream answered tools/call with something else than a tool result"),
            Err(ServiceError::McpError(e)) => {
                // A protocol error from the upstream: recorded as an error output.
                let output = json!({"error": {"code": e.code.0, "message": e.message}});
                self.observe(u, tool, &call_id, &output, true).await;
                return refused(format!("the upstream refused the call: {}", e.message));
            }
            Err(e) => return refused(format!("the upstream is unavailable: {e}")),
        };
        let output = serde_json::to_value(&result).unwrap_or(Value::Null);
        if let Some(why) = self.observe(u, tool, &call_id, &output, result.is_error == Some(true)).await {
            return refused(format!("the tool ran, but its result is withheld: {why}"));
        }
        result
    }

    /// Record the upstream's output as an observation; `Some(reason)` when it
    /// could not be recorded (the output must then not reach the agent).
    async fn observe(&self, u: &Upstream, tool: &str, call_id: &str, output: &Value, is_error: bool) -> Option<String> {
        let body = json!({
            "event": "result",
            "session": self.session,
            "server": u.name,
            "tool": tool,
            "call_id": call_id,
            "is_error": is_error,
            "output": output,
        });
        match self.shared.arbiter.post(&body).await {
            Ok(reply) => match reply.get("decision").and_then(Value::as_str) {
                Some("allow") => None,
                _ => Some(reply.get("reason").and_then(Value::as_str).unwrap_or("not recorded by Arbiter").to_owned()),
            },
            Err(e) => Some(e),
        }
    }
}

/// The tool result a blocked or failed call answers with.
fn refused(reason: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(reason.into())])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    // A refusal is an MCP tool error carrying the reason as text.
    fn refusal_is_a_tool_error() {
        let r = refused("no");
        assert_eq!(r.is_error, Some(true));
        let v = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(v["isError"], true);
        assert_eq!(v["content"][0]["text"], "no");
    }

    #[test]
    // With several upstreams a name splits at its first `__`: the rest is
    // the upstream's own name, even when it contains `__` itself.
    fn exposed_names_split_at_the_server() {
        assert_eq!(split_exposed("fs__write_file"), Some(("fs", "write_file")));
        assert_eq!(split_exposed("web__a__b"), Some(("web", "a__b")));
        assert_eq!(split_exposed("write_file"), None);
        assert_eq!(split_exposed("__x"), None);
        assert_eq!(split_exposed("fs__"), None);
    }

    #[test]
    // A listed URI routes to its lister; otherwise the longest template
    // prefix wins; an unknown URI routes nowhere.
    fn resource_uris_route_to_their_upstream() {
        let routes: HashMap<String, usize> = [
            ("file:///a/b.txt".to_owned(), 0),
            ("demo://resource/{".to_owned(), 1),
            ("demo://resource/static/{".to_owned(), 2),
        ]
        .into_iter()
        .collect();
        assert_eq!(route_of(&routes, "file:///a/b.txt"), Some(0));
        assert_eq!(route_of(&routes, "demo://resource/7"), Some(1));
        assert_eq!(route_of(&routes, "demo://resource/static/7"), Some(2));
        assert_eq!(route_of(&routes, "file:///a/c.txt"), None);
    }

    #[test]
    // Capabilities of several upstreams merge: keys of both, flags ORed.
    fn capabilities_merge_as_a_union() {
        let mut a = json!({"tools": {"listChanged": false}, "logging": {}});
        union(&mut a, json!({"tools": {"listChanged": true}, "resources": {"subscribe": true}}));
        assert_eq!(a, json!({"tools": {"listChanged": true}, "logging": {}, "resources": {"subscribe": true}}));
    }
}
