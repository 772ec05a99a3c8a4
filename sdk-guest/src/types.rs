//! Plain Rust mirrors of the `arbiter:plugin/types@0.1.0` WIT records.
//!
//! They exist on every target so adapters can be built and unit-tested
//! natively; on wasm32 the export glue converts them to and from the
//! generated bindings field by field.

use std::fmt;

/// One raw HTTP request as the vendor sent it to the hook route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// Upper-case method, e.g. `POST`.
    pub method: String,
    /// Path below `/v1/hooks/{integration}`: `""` or `/event-name`.
    pub path: String,
    /// Lower-case header names. The host removes credential headers
    /// (authorization, cookie) before the plugin sees them.
    pub headers: Vec<(String, String)>,
    /// The body bytes, at most the integration's body limit.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The reply the host sends back to the vendor, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A response with `content-type: application/json` and `body`, which the
    /// caller must already have serialised as JSON.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self { status, headers: vec![("content-type".to_owned(), "application/json".to_owned())], body: body.into() }
    }
}

/// The five AARM decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Let the action run.
    Allow,
    /// Refuse the action.
    Deny,
    /// Let the action run with rewritten parameters.
    Modify,
    /// Ask a human (or a stronger authentication) first.
    StepUp,
    /// Decide later; the action must not run now.
    Defer,
}

impl Decision {
    /// The WIT name of the decision: `allow`, `deny`, `modify`, `step-up`, `defer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Modify => "modify",
            Decision::StepUp => "step-up",
            Decision::Defer => "defer",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for the action, as far as the vendor told us. Everything here is
/// asserted by the vendor, not verified by Arbiter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Requester {
    /// The vendor's session id; required for session context.
    pub session: String,
    /// The human on whose behalf the agent acts, if known.
    pub human: Option<String>,
    /// The agent (or sub-agent) identity, if known.
    pub agent: Option<String>,
    /// The service or client product, e.g. `claude-code`.
    pub service: Option<String>,
    /// Roles the vendor asserts for the requester.
    pub roles: Vec<String>,
    /// Scopes the vendor asserts for the requester.
    pub scope: Vec<String>,
    /// Agent identities from the outermost delegator to the acting agent.
    pub delegation_chain: Vec<String>,
    /// Other vendor facts (cwd, permission mode...) as a JSON object string.
    pub attributes_json: String,
}

/// A tool call the agent wants to make. Decided before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Action {
    /// Canonical tool family: `shell`, `file`, `network`, `mcp`, or another
    /// lower-case name for vendor-specific tools.
    pub tool: String,
    /// Canonical operation: `exec`, `read`, `write`, `egress`, `call`...
    pub operation: String,
    /// Tool parameters as a JSON object string.
    pub parameters_json: String,
    /// The target of the action (a path, URL, MCP server/tool), if any.
    pub resource: Option<String>,
    /// The tool name exactly as the vendor gave it, e.g. `Bash`.
    pub original_tool: String,
    /// The vendor's event kind, e.g. `PreToolUse`.
    pub event_kind: String,
    /// The vendor's id for this tool call, if it has one.
    pub call_id: Option<String>,
}

/// The user's request or a later instruction: the session's intent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Intent {
    /// The request text.
    pub text: String,
    /// The vendor's event kind, e.g. `UserPromptSubmit`.
    pub event_kind: String,
}

/// What a tool returned, for the session context. Not decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    /// The tool name exactly as the vendor gave it.
    pub original_tool: String,
    /// Canonical tool family, as for [`Action::tool`].
    pub tool: String,
    /// Canonical operation, as for [`Action::operation`].
    pub operation: String,
    /// The tool's output as a JSON string.
    pub output_json: String,
    /// The vendor's event kind, e.g. `PostToolUse`.
    pub event_kind: String,
    /// The vendor's id for the tool call, if it has one.
    pub call_id: Option<String>,
}

/// A lifecycle event that carries no decision (session end, stop).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lifecycle {
    /// The vendor's event kind, e.g. `SessionEnd`.
    pub event_kind: String,
    /// Event details as a JSON string.
    pub detail_json: String,
}

/// One canonical event decoded from a vendor request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The user's request.
    Intent(Intent),
    /// A tool call to decide.
    Action(Action),
    /// A tool's output.
    Observation(Observation),
    /// The session started.
    SessionStart(Lifecycle),
    /// The session ended.
    SessionEnd(Lifecycle),
    /// Any other lifecycle event.
    Other(Lifecycle),
}

/// Everything decoded from one vendor request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Who asked.
    pub requester: Requester,
    /// The canonical events, in the order the vendor reported them.
    pub events: Vec<Event>,
}

/// Why a request could not be decoded. The host answers with the plugin's
/// blocking reply and writes a receipt with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The body is not what this vendor sends.
    Malformed(String),
    /// A well-formed event this adapter does not handle.
    Unsupported(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(m) => write!(f, "malformed request: {m}"),
            DecodeError::Unsupported(m) => write!(f, "unsupported request: {m}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The host's decision for a decoded request, handed to [`Adapter::encode`](crate::Adapter::encode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// Human-readable reason; shown to the agent on a block.
    pub reason: String,
    /// The receipt that records this decision, if one was written.
    pub receipt_id: Option<String>,
    /// For [`Decision::Modify`]: the rewritten parameters as a JSON object string.
    pub modified_parameters_json: Option<String>,
    /// True when the decision was forced by a fault (plugin, policy or
    /// store), not by policy.
    pub fault: bool,
    /// True when the request held a decision point (an action); false for
    /// intents, observations and lifecycle events, which get a neutral reply.
    pub decided: bool,
}

/// What the plugin is and what its vendor can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Plugin name, e.g. `claude-code`.
    pub name: String,
    /// Vendor product, e.g. `Claude Code`.
    pub vendor: String,
    /// Plugin version (semver).
    pub version: String,
    /// Vendor versions the adapter was tested against, e.g. `2.1.x`.
    pub vendor_versions: Vec<String>,
    /// Decisions the vendor can carry natively; the others degrade.
    pub decisions: Vec<Decision>,
    /// Event kinds the adapter understands.
    pub events: Vec<String>,
    /// The reply that blocks the action when the host cannot get one from
    /// the plugin (trap, timeout). Every JSON string value equal to
    /// `{{reason}}` in the body is replaced by the reason.
    pub blocking_reply: HttpResponse,
}
