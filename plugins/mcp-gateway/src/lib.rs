//! Arbiter adapter plugin for `arbiter mcp-gateway`, the MCP protocol
//! gateway (AARM's protocol-gateway architecture).
//!
//! The gateway sits between an MCP client and an upstream MCP server and asks
//! Arbiter, through `POST /v1/hooks/mcp-gateway`, before every `tools/call`.
//! The request format is Arbiter's own:
//!
//! ```json
//! {"event": "call", "session": "…", "server": "fs", "tool": "write_file",
//!  "arguments": {"path": "/tmp/x", "content": "hi"}, "call_id": "7"}
//! {"event": "result", "session": "…", "server": "fs", "tool": "write_file",
//!  "call_id": "7", "is_error": false, "output": {"content": [...]}}
//! ```
//!
//! | `event` | canonical event |
//! |---|---|
//! | `call` | one action: tool `mcp`, operation `call`, resource `mcp://<server>/<tool>`, original tool `mcp__<server>__<tool>` (so a pack's `[mcp_tools]` mapping applies), the arguments as parameters |
//! | `result` | an observation of tool `mcp`: the output is untrusted content and is classified |
//!
//! `encode` answers HTTP 200 with
//! `{"decision": "allow" | "deny" | "modify" | "step_up" | "defer", "reason": "…", "receipt_id": "…"}`
//! and, for `modify`, `"arguments": {…}` (the complete rewritten arguments).
//! Anything the gateway cannot read as `allow` or `modify` blocks the call.
//!
//! Settings read from the integration's `settings` table:
//! - `human`: the person the sessions act for.
//! - `roles`: comma-separated roles of the agent (`principal.roles`).
//! - `max_body_bytes`: the largest body accepted (default 1 MiB).

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

pub use arbiter_adapter_kit::{DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH};
pub use decode::MAX_SERVER_LEN;

/// The plugin name, also the default integration name.
pub const PLUGIN_NAME: &str = "mcp-gateway";

/// Reply sent when the host cannot get one from the plugin (trap, timeout).
/// The host fills in `{{reason}}`.
pub const BLOCKING_REPLY: &str = r#"{"decision":"deny","reason":"{{reason}}"}"#;

/// Events this adapter understands.
pub const EVENTS: &[&str] = &["call", "result"];

/// Versions of the gateway's request format.
pub const VENDOR_VERSIONS: &[&str] = &["0.1"];

/// The MCP gateway adapter.
pub struct McpGateway;

impl Adapter for McpGateway {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: PLUGIN_NAME.to_owned(),
            vendor: "Arbiter MCP gateway".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: VENDOR_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            // The gateway carries every decision; STEP_UP and DEFER block the
            // call with a reason telling the agent to retry later.
            decisions: vec![Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp, Decision::Defer],
            events: EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            blocking_reply: HttpResponse::json(200, BLOCKING_REPLY),
        }
    }

    fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
        decode::decode(req)
    }

    fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
        encode::encode(req, verdict)
    }
}

arbiter_sdk::export_adapter!(McpGateway);
