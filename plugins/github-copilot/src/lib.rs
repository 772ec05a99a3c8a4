//! Arbiter adapter plugin for GitHub Copilot CLI 1.0 and Copilot cloud agent
//! `http` hooks.
//!
//! Copilot posts one of two payload dialects, chosen by how the event is
//! spelled in the hook configuration:
//! - camelCase (`preToolUse`): `{sessionId, timestamp, cwd, toolName,
//!   toolArgs}` with **no event name** (only `permissionRequest` carries
//!   `hookName`). Configure one URL per event,
//!   `/v1/hooks/<integration>/<event>`; the host hands the event to the
//!   plugin as `path = "/<event>"`.
//! - PascalCase, "VS Code compatible" (`PreToolUse`): snake_case fields with
//!   `hook_event_name`, and Claude tool names (`Bash`, `Read`, `Edit`...).
//!
//! When both the URL and the body name the event they must agree.
//!
//! | event (camelCase / PascalCase) | canonical event |
//! |---|---|
//! | `userPromptSubmitted` / `UserPromptSubmit` | intent (the prompt) |
//! | `preToolUse` / `PreToolUse`, `permissionRequest` / `PermissionRequest` | action (decided), one per target |
//! | `postToolUse` / `PostToolUse` | observation (the tool result) |
//! | `postToolUseFailure` / `PostToolUseFailure` | observation (the error) |
//! | `sessionStart` / `SessionStart`, `sessionEnd` / `SessionEnd` | session-start / session-end |
//! | anything else well-formed (`agentStop` / `Stop`, `subagentStop`, `preCompact`, `errorOccurred`, `notification`...) | other |
//!
//! `encode` answers `preToolUse` with `{"permissionDecision": "allow" |
//! "deny" | "ask", "permissionDecisionReason": ...}`; MODIFY is an allow with
//! `modifiedArgs`. Headless runs (`copilot -p`, the cloud agent) turn `ask`
//! into a deny, so STEP_UP is `ask` only when the integration says a human
//! is at the console (`interactive = "true"`); otherwise it, like DEFER, is a
//! deny telling the agent the action awaits approval or evidence and to
//! retry the identical action later.
//!
//! Settings read from the integration's `settings` table:
//! - `human`: the person the sessions act for (Copilot does not say).
//! - `roles`: comma-separated roles of the agent, e.g. `infra-owner,deployer`.
//! - `interactive = "true"`: a human answers Copilot's prompts; STEP_UP is
//!   sent as `ask`. Leave unset for `-p` and cloud-agent runs.
//! - `allow_reply = "neutral"`: answer an ALLOW with `{}`, so Copilot's own
//!   permission prompts still apply.
//! - `approve_permission_requests = "true"`: answer a `permissionRequest`
//!   that policy allows with `allow` (default: leave it to Copilot).
//! - `mcp_servers`: comma-separated MCP server names, so `<server>-<tool>`
//!   tool names decode as `mcp.call` (`github-mcp-server` is always known).
//! - `max_body_bytes`: the largest body accepted (default 1 MiB).

mod decode;
mod encode;
mod event;
#[cfg(test)]
mod tests;

use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

pub use arbiter_adapter_kit::{DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_TARGETS};

/// The plugin name, also the default integration name.
pub const PLUGIN_NAME: &str = "github-copilot";

/// Reply sent when the host cannot get one from the plugin (trap, timeout):
/// `permissionDecision: "deny"` blocks a `preToolUse` and `behavior: "deny"`
/// a `permissionRequest` (both dialects read the same output fields). The
/// host fills in `{{reason}}`.
pub const BLOCKING_REPLY: &str =
    r#"{"permissionDecision":"deny","permissionDecisionReason":"{{reason}}","behavior":"deny","message":"{{reason}}"}"#;

/// Hook events this adapter understands, in both spellings.
pub const EVENTS: &[&str] = &[
    "preToolUse",
    "PreToolUse",
    "permissionRequest",
    "PermissionRequest",
    "postToolUse",
    "PostToolUse",
    "postToolUseFailure",
    "PostToolUseFailure",
    "userPromptSubmitted",
    "UserPromptSubmit",
    "sessionStart",
    "SessionStart",
    "sessionEnd",
    "SessionEnd",
    "agentStop",
    "Stop",
    "subagentStart",
    "subagentStop",
    "SubagentStop",
    "preCompact",
    "PreCompact",
    "errorOccurred",
    "ErrorOccurred",
    "notification",
    "Notification",
    "userPromptTransformed",
];

/// Copilot CLI versions whose real payloads the tests decode
/// (`tests/fixtures/copilot-cli/<version>/`).
pub const VENDOR_VERSIONS: &[&str] = &["1.0.102"];

/// The GitHub Copilot adapter.
pub struct GithubCopilot;

impl Adapter for GithubCopilot {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: PLUGIN_NAME.to_owned(),
            vendor: "GitHub Copilot CLI / cloud agent".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: VENDOR_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            // `ask` is Copilot's own prompt (interactive CLI only); DEFER has
            // no equivalent and degrades to a deny.
            decisions: vec![Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp],
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

arbiter_sdk::export_adapter!(GithubCopilot);
