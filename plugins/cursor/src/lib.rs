//! Arbiter adapter plugin for Cursor agent hooks (IDE and `cursor-agent`).
//!
//! **The wire format is from documentation, not from a capture.** Cursor is
//! not installable from any registry this project can reach, so no payload
//! here was recorded from a real client. Field names follow Cursor's hook
//! documentation (<https://cursor.com/docs/agent/hooks>) as mirrored and
//! cross-checked in third-party references:
//! <https://cupcake.eqtylab.io/reference/harnesses/cursor>,
//! <https://cdot65.github.io/prisma-airs-cursor-hooks/reference/cursor-hooks-api/>,
//! CorridorSecurity/hookshot `docs/reference-cursor.md`, and (for
//! `updated_input`) the `rskim` crate's Cursor hook. Where the sources
//! disagree the adapter accepts every documented shape: MCP `tool_input` as a
//! JSON string or an object, MCP `tool_name` as `MCP:<server>:<tool>`,
//! `mcp__<server>__<tool>` or a plain name.
//!
//! Cursor has command hooks only: the shim (`arbiter hook --integration
//! cursor`) forwards the hook's stdin to `POST /v1/hooks/cursor` and prints
//! the reply. `decode` maps one hook payload to canonical events:
//!
//! | `hook_event_name` | event |
//! |---|---|
//! | `beforeSubmitPrompt` | intent (the prompt) |
//! | `beforeShellExecution` | action `shell`/`exec` (decided) |
//! | `beforeMCPExecution` | action `mcp`/`call` on `mcp://<server>/<tool>` (decided) |
//! | `beforeReadFile`, `beforeTabFileRead` | action `file`/`read` on the path (decided); the file content is not kept, only its size |
//! | `preToolUse` | action (decided), one per target of the tool call |
//! | `afterShellExecution`, `afterMCPExecution`, `postToolUse`, `postToolUseFailure` | observation (the output or the error) |
//! | `afterFileEdit`, `afterTabFileEdit` | observation (the edits) |
//! | `sessionStart` / `sessionEnd` | session-start / session-end |
//! | anything else well-formed (`stop`, `afterAgentResponse`, `afterAgentThought`, `subagentStart`...) | other; agent text is summarised, not copied |
//!
//! The session is `conversation_id` (`session_id` when a newer payload has
//! only that); the human is `user_email` when Cursor sends one, else the
//! `human` setting.
//!
//! `encode` answers in each event's own output form:
//! - `beforeShellExecution`, `beforeMCPExecution`, `preToolUse`:
//!   `{"permission": "allow" | "deny" | "ask", "user_message", "agent_message"}`.
//!   STEP_UP is `ask`. MODIFY is `allow` with `updated_input`, which newer
//!   builds accept on `preToolUse` and `beforeShellExecution` only; on
//!   `beforeMCPExecution` it degrades to a deny saying why.
//! - `beforeReadFile`, `beforeTabFileRead`: `permission` `allow` or `deny`
//!   only; STEP_UP and MODIFY become a deny with the reason (in `hold` mode
//!   the host's reason names the approval to wait for).
//! - `beforeSubmitPrompt`: `{"continue": true}`, or `continue: false` with a
//!   `user_message` when the prompt must not go out.
//! - every other event: `{}` (`stop` never gets a `followup_message`, which
//!   would submit a new user turn).
//!
//! DEFER is always a deny naming the deferral. Cursor fails open when a hook
//! crashes or times out unless the hook is configured `failClosed: true`
//! (docs/adapters.md gives the exact `.cursor/hooks.json`).
//!
//! Settings read from the integration's `settings` table:
//! - `human`: the person the sessions act for when Cursor sends no `user_email`.
//! - `roles`: comma-separated roles of the agent, e.g. `infra-owner,deployer`.
//! - `max_body_bytes`: the largest body accepted (default 1 MiB).

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

pub use arbiter_adapter_kit::{DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_TARGETS};

/// The plugin name, also the default integration name.
pub const PLUGIN_NAME: &str = "cursor";

/// Reply sent when the host cannot get one from the plugin (trap, timeout):
/// `permission: "deny"` blocks a tool or a file read, `continue: false` a
/// prompt. The request's event is unknown here, so both are sent. The host
/// fills in `{{reason}}`.
pub const BLOCKING_REPLY: &str =
    r#"{"permission":"deny","continue":false,"user_message":"{{reason}}","agent_message":"{{reason}}"}"#;

/// Hook events this adapter maps to something more specific than `other`.
pub const EVENTS: &[&str] = &[
    "beforeSubmitPrompt",
    "beforeShellExecution",
    "beforeMCPExecution",
    "beforeReadFile",
    "beforeTabFileRead",
    "preToolUse",
    "afterShellExecution",
    "afterMCPExecution",
    "afterFileEdit",
    "afterTabFileEdit",
    "postToolUse",
    "postToolUseFailure",
    "sessionStart",
    "sessionEnd",
    "stop",
    "afterAgentResponse",
    "afterAgentThought",
];

/// What the fixtures stand for: payloads written from Cursor's documentation
/// (`tests/fixtures/cursor/documented/`), not captures of a given version.
pub const VENDOR_VERSIONS: &[&str] = &["documented (1.7+, not captured)"];

/// The Cursor adapter.
pub struct Cursor;

impl Adapter for Cursor {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: PLUGIN_NAME.to_owned(),
            vendor: "Cursor".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: VENDOR_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
            // `ask` exists on the shell, MCP and generic tool hooks, so the
            // host asks Cursor by default; events that cannot ask are listed
            // in the integration's `step_up_hold_events`. DEFER has no Cursor
            // equivalent and degrades to a deny.
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

arbiter_sdk::export_adapter!(Cursor);
