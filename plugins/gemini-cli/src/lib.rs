//! Arbiter adapter plugin for Gemini CLI 0.61 command hooks.
//!
//! Gemini CLI has command hooks only: a shim (`arbiter hook --integration
//! gemini-cli`) forwards the hook's stdin to `POST /v1/hooks/gemini-cli` and
//! prints the reply. `decode` maps one hook payload to canonical events:
//!
//! | `hook_event_name` | event |
//! |---|---|
//! | `BeforeAgent` | intent (the user's prompt) |
//! | `BeforeTool` | action (decided), one per target of the tool call |
//! | `AfterTool` | observation (the tool response) |
//! | `SessionStart` / `SessionEnd` | session-start / session-end |
//! | anything else well-formed (`AfterAgent`, `BeforeToolSelection`, `BeforeModel`, `AfterModel`, `Notification`, `PreCompress`) | other; LLM requests and responses are summarised, not copied |
//!
//! `encode` answers `{"decision": "allow" | "deny", "reason": ...}`; MODIFY is
//! an allow with `hookSpecificOutput.tool_input`. Gemini *merges* that input
//! into the model's arguments, so every argument the rewrite drops is sent
//! as `null`. Gemini CLI in headless yolo mode hangs on `ask`, so `ask` is
//! never sent: STEP_UP and DEFER become a deny telling the agent the action
//! awaits approval or evidence and to retry the identical action later.
//!
//! Settings read from the integration's `settings` table:
//! - `human`: the person the sessions act for (Gemini CLI does not say).
//! - `roles`: comma-separated roles of the agent, e.g. `infra-owner,deployer`.
//! - `max_body_bytes`: the largest body accepted (default 1 MiB).
//! - `allow_reply = "neutral"`: answer an ALLOW with `{}` instead of
//!   `decision: "allow"`, leaving the call to Gemini's own approval settings.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

pub use arbiter_adapter_kit::{DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_TARGETS};

/// The plugin name, also the default integration name.
pub const PLUGIN_NAME: &str = "gemini-cli";

/// Reply sent when the host cannot get one from the plugin (trap, timeout):
/// `decision: "deny"` blocks a `BeforeTool` (the tool) and a `BeforeAgent`
/// (the turn). The host fills in `{{reason}}`.
pub const BLOCKING_REPLY: &str = r#"{"decision":"deny","reason":"{{reason}}"}"#;

/// Hook events this adapter understands.
pub const EVENTS: &[&str] = &[
    "BeforeAgent",
    "BeforeTool",
    "AfterTool",
    "SessionStart",
    "SessionEnd",
    "AfterAgent",
    "BeforeToolSelection",
    "BeforeModel",
    "AfterModel",
    "Notification",
    "PreCompress",
];

/// Gemini CLI versions whose real payloads the tests decode
/// (`tests/fixtures/gemini-cli/<version>/`).
pub const VENDOR_VERSIONS: &[&str] = &["0.61.0"];

/// The Gemini CLI adapter.
pub struct GeminiCli;

impl Adapter for GeminiCli {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: PLUGIN_NAME.to_owned(),
            vendor: "Gemini CLI".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: VENDOR_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            // `ask` hangs headless runs, so STEP_UP is not carried: the host
            // holds it (approval service) and DEFER degrades to a deny.
            decisions: vec![Decision::Allow, Decision::Deny, Decision::Modify],
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

arbiter_sdk::export_adapter!(GeminiCli);
