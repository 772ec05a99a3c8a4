//! `arbiter mcp-gateway`: an MCP proxy (AARM's protocol-gateway
//! architecture) between an MCP client on stdio and one upstream MCP server
//! run as a child process.
//!
//! Every request is forwarded to the upstream as it is, except `tools/call`:
//! the call is first sent to Arbiter (`POST /v1/hooks/mcp-gateway`, the
//! `mcp-gateway` adapter plugin) and forwarded only on `allow`, or on
//! `modify` with the rewritten arguments. Anything else (deny, defer,
//! step-up, Arbiter unreachable, slow, an error status, a reply that cannot
//! be read) answers the client with a `CallToolResult` whose `isError` is
//! true and whose text is the reason: **fail closed**. After the upstream
//! answers, its result is posted as an observation (the output is untrusted
//! content the session's later decisions take into account); if that cannot
//! be recorded, the result is withheld.

use std::time::Duration;

use anyhow::Context as _;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, ClientNotification, ClientRequest, ContentBlock, ErrorData,
    ServerConfig, ServerPeerInfo, ServerResult,
};
use rmcp::service::{NotificationContext, Peer, RequestContext, RoleClient, RoleServer, Service, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{ServiceExt, transport};
use serde_json::{Map, Value, json};

/// Largest reply accepted from Arbiter.
const MAX_REPLY: usize = 1024 * 1024;

/// The integration (`/v1/hooks/<integration>`) the gateway posts to.
pub const INTEGRATION: &str = "mcp-gateway";

/// What the gateway was told to do.
#[derive(Debug, Clone)]
pub struct GatewayArgs {
    /// The upstream server's name in resources (`mcp://<server>/<tool>`).
    pub server_name: String,
    /// Arbiter's base URL.
    pub url: String,
    /// Ingress token.
    pub token: Option<String>,
    /// The session every call is recorded under.
    pub session: String,
    /// Timeout of one call to Arbiter.
    pub timeout: Duration,
    /// The upstream command and its arguments.
    pub command: Vec<String>,
}

/// Run the gateway until the client closes stdin.
///
/// # Errors
/// The arguments are unusable or the upstream cannot be started or
/// initialised.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let Some((program, program_args)) = args.command.split_first() else {
        anyhow::bail!("no upstream command (give it after `--`)");
    };
    let valid_name = !args.server_name.is_empty()
        && args.server_name.len() <= 64
        && args.server_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !args.server_name.contains("__");
    if !valid_name {
        anyhow::bail!("--server-name must be 1-64 letters, digits, `-` or `_`, without `__`");
    }
    let token = args.token.clone().filter(|t| !t.trim().is_empty());
    let Some(token) = token else {
        anyhow::bail!("no ingress token (set ARBITER_TOKEN or --token-file)");
    };
    let http = reqwest::Client::builder()
        .timeout(args.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build an HTTP client")?;
    let mut command = tokio::process::Command::new(program);
    command.args(program_args);
    let child = TokioChildProcess::new(command).with_context(|| format!("cannot start the upstream `{program}`"))?;
    let upstream = ().serve(child).await.with_context(|| format!("the upstream `{program}` did not initialise"))?;
    let Some(peer) = upstream.peer_info() else {
        anyhow::bail!("the upstream `{program}` sent no initialize result");
    };
    let info = announced(&peer);
    tracing::info!(server = %args.server_name, session = %args.session, "mcp-gateway: upstream initialised");
    let gateway = Gateway {
        upstream: upstream.peer().clone(),
        info,
        arbiter: Arbiter {
            http,
            endpoint: format!("{}/v1/hooks/{INTEGRATION}", args.url.trim_end_matches('/')),
            token,
            timeout: args.timeout,
        },
        server: args.server_name.clone(),
        session: args.session.clone(),
    };
    let running = gateway.serve(transport::stdio()).await.context("the MCP client did not initialise")?;
    let quit = running.waiting().await;
    let _ = upstream.cancel().await;
    quit.context("serving the MCP client")?;
    Ok(())
}

/// The proxy service the client talks to.
struct Gateway {
    upstream: Peer<RoleClient>,
    info: ServerConfig,
    arbiter: Arbiter,
    server: String,
    session: String,
}

impl Service<RoleServer> for Gateway {
    async fn handle_request(
        &self,
        request: ClientRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        match request {
            ClientRequest::InitializeRequest(_) => Ok(ServerResult::InitializeResult(self.info.clone())),
            ClientRequest::CallToolRequest(call) => {
                Ok(ServerResult::CallToolResult(self.call_tool(call.params, context.id.to_string()).await))
            }
            other => self.upstream.send_request(other).await.map_err(upstream_error),
        }
    }

    async fn handle_notification(
        &self,
        notification: ClientNotification,
        _context: NotificationContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        match notification {
            // The gateway's own client already sent `initialized`; request
            // ids differ on the two sides, so a cancel cannot be mapped.
            ClientNotification::InitializedNotification(_) | ClientNotification::CancelledNotification(_) => Ok(()),
            other => self.upstream.send_notification(other).await.map_err(upstream_error),
        }
    }

    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }
}

impl Gateway {
    /// One `tools/call`: ask Arbiter, forward when let through, record the
    /// result. Never fails: every failure is an `isError` result.
    async fn call_tool(&self, mut params: CallToolRequestParams, call_id: String) -> CallToolResult {
        let tool = params.name.to_string();
        let arguments = params.arguments.clone().map_or_else(|| Value::Object(Map::new()), Value::Object);
        let ask = json!({
            "event": "call",
            "session": self.session,
            "server": self.server,
            "tool": tool,
            "arguments": arguments,
            "call_id": call_id,
        });
        let reply = match self.arbiter.post(&ask).await {
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
                tracing::info!(tool = %tool, decision, "mcp-gateway: call blocked");
                return refused(reason);
            }
            None => return refused("arbiter mcp-gateway: Arbiter's reply has no decision; the call was not made"),
        }
        let result =
            match self.upstream.send_request(ClientRequest::CallToolRequest(CallToolRequest::new(params))).await {
                Ok(ServerResult::CallToolResult(r)) => r,
                Ok(_) => return refused("the upstream answered tools/call with something else than a tool result"),
                Err(ServiceError::McpError(e)) => {
                    // A protocol error from the upstream: recorded as an error output.
                    let output = json!({"error": {"code": e.code.0, "message": e.message}});
                    self.observe(&tool, &call_id, &output, true).await;
                    return refused(format!("the upstream refused the call: {}", e.message));
                }
                Err(e) => return refused(format!("the upstream is unavailable: {e}")),
            };
        let output = serde_json::to_value(&result).unwrap_or(Value::Null);
        if let Some(why) = self.observe(&tool, &call_id, &output, result.is_error == Some(true)).await {
            return refused(format!("the tool ran, but its result is withheld: {why}"));
        }
        result
    }

    /// Record the upstream's output as an observation; `Some(reason)` when it
    /// could not be recorded (the output must then not reach the agent).
    async fn observe(&self, tool: &str, call_id: &str, output: &Value, is_error: bool) -> Option<String> {
        let body = json!({
            "event": "result",
            "session": self.session,
            "server": self.server,
            "tool": tool,
            "call_id": call_id,
            "is_error": is_error,
            "output": output,
        });
        match self.arbiter.post(&body).await {
            Ok(reply) => match reply.get("decision").and_then(Value::as_str) {
                Some("allow") => None,
                _ => Some(reply.get("reason").and_then(Value::as_str).unwrap_or("not recorded by Arbiter").to_owned()),
            },
            Err(e) => Some(e),
        }
    }
}

/// The gateway's client for Arbiter's hook endpoint.
struct Arbiter {
    http: reqwest::Client,
    endpoint: String,
    token: String,
    timeout: Duration,
}

impl Arbiter {
    /// Post one request; the reply's JSON object, or why there is none.
    async fn post(&self, body: &Value) -> Result<Map<String, Value>, String> {
        let sent = self.http.post(&self.endpoint).bearer_auth(&self.token).json(body).send().await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(format!("Arbiter did not answer within {:?}", self.timeout)),
            Err(e) => return Err(format!("Arbiter is unreachable ({})", e.without_url())),
        };
        let status = response.status();
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_REPLY => bytes.extend_from_slice(&chunk),
                Ok(Some(_)) => return Err(format!("Arbiter's reply exceeds {MAX_REPLY} bytes")),
                Ok(None) => break,
                Err(e) => return Err(format!("reading Arbiter's reply failed ({})", e.without_url())),
            }
        }
        if !status.is_success() {
            return Err(format!("Arbiter answered HTTP {status}"));
        }
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(reply)) => Ok(reply),
            _ => Err("Arbiter's reply is not a JSON object".to_owned()),
        }
    }
}

/// What the gateway announces to its client: the upstream's own
/// `initialize` result (capabilities, `serverInfo`, instructions).
fn announced(peer: &ServerPeerInfo) -> ServerConfig {
    let mut info = ServerConfig::new(peer.capabilities.clone()).with_protocol_version(peer.protocol_version.clone());
    if let Some(server) = &peer.server_info {
        info = info.with_server_info(server.clone());
    }
    info.instructions.clone_from(&peer.instructions);
    info.meta.clone_from(&peer.meta);
    info
}

/// The tool result a blocked or failed call answers with.
fn refused(reason: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(reason.into())])
}

fn upstream_error(e: ServiceError) -> ErrorData {
    match e {
        ServiceError::McpError(e) => e,
        other => ErrorData::internal_error(format!("upstream MCP server: {other}"), None),
    }
}

#[cfg(test)]
mod tests {
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
}
