//! Which Copilot event a request carries, from its URL and body.

use arbiter_adapter_kit::{check_event_name, malformed, path_event, required_str};
use arbiter_sdk::{DecodeError, HttpRequest};
use serde_json::{Map, Value};

/// Every event Copilot names, as (camelCase, PascalCase) spellings. The
/// PascalCase names are those of Claude Code's hooks (`agentStop` is `Stop`).
const SPELLINGS: &[(&str, &str)] = &[
    ("sessionStart", "SessionStart"),
    ("sessionEnd", "SessionEnd"),
    ("userPromptSubmitted", "UserPromptSubmit"),
    ("userPromptTransformed", "UserPromptTransformed"),
    ("preToolUse", "PreToolUse"),
    ("postToolUse", "PostToolUse"),
    ("postToolUseFailure", "PostToolUseFailure"),
    ("permissionRequest", "PermissionRequest"),
    ("agentStop", "Stop"),
    ("subagentStart", "SubagentStart"),
    ("subagentStop", "SubagentStop"),
    ("preCompact", "PreCompact"),
    ("errorOccurred", "ErrorOccurred"),
    ("notification", "Notification"),
];

/// What the adapter does with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    PreToolUse,
    PermissionRequest,
    PostToolUse,
    PostToolUseFailure,
    UserPrompt,
    SessionStart,
    SessionEnd,
    Other,
}

/// The payload's field naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `sessionId`, `toolName`, `toolArgs`...
    Camel,
    /// `session_id`, `tool_name`, `tool_input`... (VS Code compatible).
    Snake,
}

impl Dialect {
    /// The field name in this dialect: `camel` or `snake`.
    pub(crate) fn pick<'a>(self, camel: &'a str, snake: &'a str) -> &'a str {
        match self {
            Dialect::Camel => camel,
            Dialect::Snake => snake,
        }
    }

    /// How the requester's attributes name it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Dialect::Camel => "camelCase",
            Dialect::Snake => "vscode",
        }
    }
}

/// The event a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookEvent {
    /// The vendor's name for it, as the body (else the URL) spells it.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) dialect: Dialect,
}

/// The camelCase spelling of an event name (itself when unknown).
fn canonical(name: &str) -> &str {
    SPELLINGS.iter().find(|(c, p)| *c == name || *p == name).map_or(name, |(c, _)| c)
}

fn kind_of(name: &str) -> Kind {
    match canonical(name) {
        "preToolUse" => Kind::PreToolUse,
        "permissionRequest" => Kind::PermissionRequest,
        "postToolUse" => Kind::PostToolUse,
        "postToolUseFailure" => Kind::PostToolUseFailure,
        "userPromptSubmitted" => Kind::UserPrompt,
        "sessionStart" => Kind::SessionStart,
        "sessionEnd" => Kind::SessionEnd,
        _ => Kind::Other,
    }
}

/// The event of `req`: named by the body (`hook_event_name` in the VS Code
/// dialect, `hookName` on a camelCase `permissionRequest`) or by the URL
/// (`path = "/<event>"`). When both name it they must agree.
///
/// # Errors
/// [`DecodeError::Malformed`] when neither names an event, a name is not an
/// event name, or the URL and the body disagree.
pub(crate) fn hook_event(req: &HttpRequest, body: &Map<String, Value>) -> Result<HookEvent, DecodeError> {
    let routed = path_event(req)?;
    let named = if body.contains_key("hook_event_name") {
        let name = required_str(body, "hook_event_name")?;
        check_event_name("`hook_event_name`", name)?;
        // Copilot's `notification` names itself but keeps camelCase fields.
        let dialect = if body.contains_key("sessionId") { Dialect::Camel } else { Dialect::Snake };
        Some((name, dialect))
    } else if body.contains_key("hookName") {
        let name = required_str(body, "hookName")?;
        check_event_name("`hookName`", name)?;
        Some((name, Dialect::Camel))
    } else {
        None
    };
    let (name, dialect) = match (routed, named) {
        (None, None) => {
            return Err(malformed(
                "the request names no event: Copilot's camelCase payloads carry none, so give each event its own \
                 URL, /v1/hooks/<integration>/<event>",
            ));
        }
        (Some(routed), None) => (routed, Dialect::Camel),
        (None, Some(named)) => named,
        (Some(routed), Some((name, dialect))) => {
            if canonical(routed) != canonical(name) {
                return Err(malformed(format!("the URL names event `{routed}` but the body is a `{name}`")));
            }
            (name, dialect)
        }
    };
    Ok(HookEvent { name: name.to_owned(), kind: kind_of(name), dialect })
}
