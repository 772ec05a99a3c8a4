//! What Arbiter's bundled adapters (`gemini-cli`, `codex-cli`, `cursor`,
//! `github-copilot`) share: the input limits every adapter enforces, the
//! typed [`DecodeError`](arbiter_sdk::DecodeError)s it refuses bad input
//! with, the requester built from the integration's settings, the targets of
//! an action (paths, patch files, URLs), and the reasons a degraded verdict
//! is explained with.
//!
//! The limits and their messages are those of the `claude-code` adapter, so
//! every adapter refuses the same input the same way:
//!
//! | limit | value | setting |
//! |---|---|---|
//! | body | 1 MiB ([`DEFAULT_MAX_BODY_BYTES`]) | `max_body_bytes` |
//! | nesting of tool input / output | 64 levels ([`MAX_JSON_DEPTH`]) | — |
//! | session id, agent id, call id, tool name | 256 bytes | — |
//! | event name | 64 letters, digits or `_` | — |
//! | resource | 4096 bytes, refused (never clipped) | — |
//! | targets of one tool call | 64 ([`MAX_TARGETS`]) | — |

mod input;
mod reply;
mod targets;

pub use input::{
    DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH, actions, body_limit, call_id, check_depth, check_event_name, check_len,
    clip, generic_tool, lifecycle, list_setting, malformed, object_field, optional_str, parse_body, path_event,
    requester, required_str, setting_is, tool_name,
};
pub use reply::{
    blocks, held_reason, json_reply, modified_parameters, modify_as_merge, reason, unusable_modify_reason, with_receipt,
};
pub use targets::{MAX_TARGETS, mcp_resource, patch_targets, resolve_path, split_mcp_double, urls_in};

/// A vendor tool in canonical terms: the tool family, the operation, and the
/// targets it acts on. One action is decoded per target (none: one action
/// without a resource), so a policy on a protected path sees every path a
/// multi-file tool call touches, not only the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Canonical tool family: `shell`, `file`, `network`, `mcp`, or a
    /// vendor-specific lower-case name.
    pub tool: String,
    /// Canonical operation: `exec`, `read`, `write`, `egress`, `call`.
    pub operation: &'static str,
    /// Paths, URLs or `mcp://server/tool` the call acts on, in order.
    pub resources: Vec<String>,
}

impl Classified {
    /// A classification with at most one target.
    pub fn new(tool: impl Into<String>, operation: &'static str, resource: Option<String>) -> Self {
        Self { tool: tool.into(), operation, resources: resource.into_iter().collect() }
    }
}
