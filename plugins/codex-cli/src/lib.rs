//! Arbiter adapter plugin for OpenAI Codex CLI 0.169 command hooks.
//!
//! Codex CLI has command hooks only: a shim (`arbiter hook --integration
//! codex-cli`) forwards the hook's stdin to `POST /v1/hooks/codex-cli` and
//! prints the reply. `decode` maps one hook payload to canonical events:
//!
//! | `hook_event_name` | event |
//! |---|---|
//! | `UserPromptSubmit` | intent (the prompt) |
//! | `PreToolUse`, `PermissionRequest` | action (decided), one per target (an `apply_patch` touching three files is three actions) |
//! | `PostToolUse` | observation (the tool response) |
//! | `SessionStart` | session-start |
//! | anything else well-formed (`Stop`, `StopFailure`, `PreCompact`, `PostCompact`, `SubagentStart`, `SubagentStop`) | other |
//!
//! `encode` answers only with fields Codex's output schemas allow (an
//! unknown field makes the hook "failed" and the tool runs): ALLOW is `{}`
//! (Codex rejects a bare `permissionDecision: "allow"`), DENY is
//! `permissionDecision: "deny"` with a non-empty reason, MODIFY is
//! `permissionDecision: "allow"` with the full `updatedInput`. Codex treats
//! `ask` as a failed hook and runs the tool, so `ask` is never sent: STEP_UP
//! and DEFER become a deny telling the agent the action awaits approval or
//! evidence and to retry the identical action later.
//!
//! Settings read from the integration's `settings` table:
//! - `human`: the person the sessions act for (Codex does not say).
//! - `roles`: comma-separated roles of the agent, e.g. `infra-owner,deployer`.
//! - `max_body_bytes`: the largest body accepted (default 1 MiB).
//! - `approve_permission_requests = "true"`: answer a `PermissionRequest`
//!   that policy allows with `allow` (default: leave it to Codex's own
//!   approval flow).

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

pub use arbiter_adapter_kit::{DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_TARGETS};

/// The plugin name, also the default integration name.
pub const PLUGIN_NAME: &str = "codex-cli";

/// Reply sent when the host cannot get one from the plugin (trap, timeout):
/// the legacy `decision: "block"` blocks both a `PreToolUse` and a
/// `UserPromptSubmit`, and is valid in both output schemas. The host fills in
/// `{{reason}}` (never empty: Codex ignores a block without a reason).
pub const BLOCKING_REPLY: &str = r#"{"decision":"block","reason":"{{reason}}"}"#;

/// Hook events this adapter understands.
pub const EVENTS: &[&str] = &[
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "SessionStart",
    "Stop",
    "StopFailure",
    "PreCompact",
    "PostCompact",
    "SubagentStart",
    "SubagentStop",
];

/// Codex CLI versions whose real payloads the tests decode
/// (`tests/fixtures/codex-cli/<version>/`).
pub const VENDOR_VERSIONS: &[&str] = &["0.169.0"];

/// The Codex CLI adapter.
pub struct CodexCli;

impl Adapter for CodexCli {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: PLUGIN_NAME.to_owned(),
            vendor: "OpenAI Codex CLI".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: VENDOR_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            // No `ask` (it runs the tool): the host holds STEP_UP in its
            // approval service, and DEFER degrades to a deny.
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

arbiter_sdk::export_adapter!(CodexCli);
