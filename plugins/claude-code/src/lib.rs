//! Arbiter adapter plugin for Claude Code 2.1.x `http` hooks.
//!
//! `decode` maps one hook payload to one canonical event:
//!
//! | `hook_event_name` | event |
//! |---|---|
//! | `UserPromptSubmit` | intent (the prompt) |
//! | `PreToolUse`, `PermissionRequest` | action (decided) |
//! | `PostToolUse`, `PostToolUseFailure` | observation (tool output or error) |
//! | `SessionStart` / `SessionEnd` | session-start / session-end |
//! | anything else well-formed (`Stop`, `SubagentStop`, `Notification`, `PreCompact`...) | other |
//!
//! `encode` always answers HTTP 200 with a JSON body, because Claude Code
//! ignores any other reply and runs the tool (a deny sent as 403 is a no-op).
//!
//! Settings read from the integration's `settings` table:
//! - `human`: the person the sessions act for (Claude Code does not say).
//! - `roles`: comma-separated roles of the agent (policies read them as
//!   `principal.roles`), e.g. `infra-owner,deployer`.
//! - `max_body_bytes`: the largest body accepted (default 1 MiB, the host's
//!   default body limit); raise it together with the host's limit.
//! - `allow_reply = "neutral"`: answer an ALLOW with `{}`, so Claude Code's
//!   own permission prompts still apply (Arbiter then only blocks, rewrites
//!   or asks).
//! - `approve_permission_requests = "true"`: answer a `PermissionRequest`
//!   that policy allows with `allow` (default: leave it to the user).

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

pub use decode::{DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH};

/// The plugin name, also the default integration name.
pub const PLUGIN_NAME: &str = "claude-code";

/// Reply sent when the host cannot get one from the plugin (trap, timeout):
/// it blocks both a `PreToolUse` (via `permissionDecision`) and a
/// `UserPromptSubmit` (via `decision`). The host fills in `{{reason}}`.
pub const BLOCKING_REPLY: &str = r#"{"decision":"block","reason":"{{reason}}","hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"deny","permissionDecisionReason":"{{reason}}"}}"#;

/// Hook events this adapter maps to something more specific than `other`.
pub const EVENTS: &[&str] = &[
    "UserPromptSubmit",
    "PreToolUse",
    "PermissionRequest",
    "PostToolUse",
    "PostToolUseFailure",
    "SessionStart",
    "SessionEnd",
    "Stop",
    "SubagentStop",
    "Notification",
    "PreCompact",
];

/// The Claude Code adapter.
pub struct ClaudeCode;

impl Adapter for ClaudeCode {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: PLUGIN_NAME.to_owned(),
            vendor: "Claude Code".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: vec!["2.1.x".to_owned()],
            // Defer has no Claude Code equivalent; it degrades to a deny.
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

arbiter_sdk::export_adapter!(ClaudeCode);
