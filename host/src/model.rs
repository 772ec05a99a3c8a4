//! The values that flow through the pipeline: the canonical action, the five
//! decisions, and faults. Shared by every component, owned by none.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The five AARM decisions. Serialised in upper case, as in receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    /// Proceed unchanged.
    Allow,
    /// Block.
    Deny,
    /// Proceed with rewritten parameters.
    Modify,
    /// A human must approve first.
    StepUp,
    /// Cannot decide yet.
    Defer,
}

impl Decision {
    /// The receipt spelling, e.g. `STEP_UP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::Modify => "MODIFY",
            Self::StepUp => "STEP_UP",
            Self::Defer => "DEFER",
        }
    }

    /// Parse the receipt spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ALLOW" => Self::Allow,
            "DENY" => Self::Deny,
            "MODIFY" => Self::Modify,
            "STEP_UP" => Self::StepUp,
            "DEFER" => Self::Defer,
            _ => return None,
        })
    }

    /// Whether the action may run now (possibly modified).
    pub fn proceeds(self) -> bool {
        matches!(self, Self::Allow | Self::Modify)
    }

    /// Severity for combining several decisions of one request: the most
    /// restrictive wins.
    pub fn severity(self) -> u8 {
        match self {
            Self::Allow => 0,
            Self::Modify => 1,
            Self::StepUp => 2,
            Self::Defer => 3,
            Self::Deny => 4,
        }
    }
}

/// Who asserted the requester identity. Arbiter never verifies what a vendor
/// says about its users; the receipt says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssertedBy {
    /// Taken from a vendor hook payload.
    Vendor,
    /// Given by an SDK caller of `/v1/evaluate`.
    Caller,
}

/// AARM's requester context: the identities behind an action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequesterContext {
    /// The agent session.
    pub session: String,
    /// The human on whose behalf the agent acts.
    pub human: Option<String>,
    /// The acting agent.
    pub agent: Option<String>,
    /// The client product or service.
    pub service: Option<String>,
    /// Roles of the principal.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Privilege scope.
    #[serde(default)]
    pub scope: Vec<String>,
    /// Delegators, outermost first.
    #[serde(default)]
    pub delegation_chain: Vec<String>,
    /// Who asserted this context.
    pub asserted_by: AssertedBy,
    /// Other facts the vendor reported (cwd, permission mode...).
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// One tool call, normalised. The `action` member of every receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanonicalAction {
    /// Unique id of the action.
    pub action_id: String,
    /// When Arbiter received it (RFC 3339, UTC).
    pub timestamp: String,
    /// Canonical tool family.
    pub tool: String,
    /// Canonical operation.
    pub operation: String,
    /// Tool parameters as the agent passed them.
    pub parameters: Map<String, Value>,
    /// Target of the action.
    pub resource: Option<String>,
    /// The vendor's name for the tool.
    pub original_tool: String,
    /// The vendor event that carried it.
    pub event_kind: String,
    /// The integration that reported it.
    pub integration: String,
    /// Identities behind the action.
    pub requester_context: RequesterContext,
}

impl CanonicalAction {
    /// `tool.operation`, the Cedar action id.
    pub fn action_name(&self) -> String {
        format!("{}.{}", self.tool, self.operation)
    }
}

/// Which part of Arbiter failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultComponent {
    /// An adapter plugin.
    Plugin,
    /// The policy decision point.
    Policy,
    /// The receipt or context store.
    Store,
    /// The session context.
    Context,
    /// Arbiter's own ingress bounds (rate, concurrency, deadline).
    Ingress,
}

/// What kind of failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A WebAssembly trap (panic, unreachable, bad memory access).
    Trap,
    /// The plugin call, or the whole hook, overran its deadline.
    Deadline,
    /// The plugin tried to grow memory past its cap.
    Memory,
    /// The plugin returned output that breaks the contract.
    Malformed,
    /// The plugin refused the request as not its vendor's format.
    Rejected,
    /// The component could not be reached or used.
    Unavailable,
    /// A policy could not be evaluated.
    Evaluation,
    /// The session's hash chain no longer verifies.
    Tampered,
    /// A rate limit refused the request.
    RateLimited,
    /// A concurrency limit refused the request.
    Overloaded,
}

/// A failure on the decision path. Always turns into a blocking decision and
/// is written into the receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{component:?} {kind:?}: {message}")]
pub struct Fault {
    /// Which part failed.
    pub component: FaultComponent,
    /// How it failed.
    pub kind: FaultKind,
    /// Details, safe to show (no secrets).
    pub message: String,
}

impl Fault {
    /// Shorthand constructor.
    pub fn new(component: FaultComponent, kind: FaultKind, message: impl Into<String>) -> Self {
        Self { component, kind, message: message.into() }
    }
}

/// RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-23T02:20:50.123Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

/// Format a time as RFC 3339 UTC with milliseconds.
pub fn format_rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}
