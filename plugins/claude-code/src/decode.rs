//! Claude Code hook payload → canonical event.

use arbiter_sdk::{Action, DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Observation, Requester};
use serde_json::{Map, Value};

/// Largest body accepted unless the `max_body_bytes` setting says otherwise:
/// the host's default body limit (1 MiB), so the plugin never parses more
/// than the host would have let through by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Deepest nesting accepted in `tool_input` and `tool_response`. Real tool
/// inputs are a few levels deep; policies and the host walk these values, so
/// a hostile depth is refused here rather than costing every later stage.
pub const MAX_JSON_DEPTH: usize = 64;

// Length caps from wit/schemas/canonical-action.v1.json, so every action this
// plugin emits is one the host can record without truncating.
const MAX_SESSION_LEN: usize = 256;
const MAX_AGENT_LEN: usize = 256;
const MAX_ORIGINAL_TOOL_LEN: usize = 256;
const MAX_TOOL_LEN: usize = 64;
const MAX_EVENT_NAME_LEN: usize = 64;
const MAX_RESOURCE_LEN: usize = 4096;
const MAX_CALL_ID_LEN: usize = 256;

/// The service every requester is attributed to.
const SERVICE: &str = "claude-code";

/// Fields common to every hook payload (`BaseHookInput`); the rest of a
/// lifecycle payload is its detail.
const BASE_FIELDS: &[&str] = &[
    "session_id",
    "transcript_path",
    "cwd",
    "prompt_id",
    "permission_mode",
    "effort",
    "agent_id",
    "agent_type",
    "hook_event_name",
];

/// Vendor facts copied into `requester.attributes-json` when present.
const ATTRIBUTE_FIELDS: &[&str] =
    &["cwd", "transcript_path", "permission_mode", "prompt_id", "agent_type", "effort", "mcp_server"];

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(message.into())
}

/// Decodes one Claude Code hook request.
pub(crate) fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    let limit = body_limit();
    if req.body.len() > limit {
        return Err(malformed(format!("body is {} bytes, over the {limit}-byte limit", req.body.len())));
    }
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
    let Value::Object(body) = body else {
        return Err(malformed("body is not a JSON object"));
    };

    let event_kind = event_name(&body)?;
    let requester = requester(&body)?;
    let event = match event_kind {
        "UserPromptSubmit" => {
            Event::Intent(Intent { text: required_str(&body, "prompt")?.to_owned(), event_kind: event_kind.to_owned() })
        }
        "PreToolUse" | "PermissionRequest" => Event::Action(action(&body, event_kind)?),
        "PostToolUse" => {
            let output = body.get("tool_response").unwrap_or(&Value::Null);
            Event::Observation(observation(&body, event_kind, output)?)
        }
        "PostToolUseFailure" => {
            let mut output = Map::new();
            for key in ["error", "is_interrupt"] {
                if let Some(v) = body.get(key) {
                    output.insert(key.to_owned(), v.clone());
                }
            }
            Event::Observation(observation(&body, event_kind, &Value::Object(output))?)
        }
        "SessionStart" => Event::SessionStart(lifecycle(&body, event_kind)),
        "SessionEnd" => Event::SessionEnd(lifecycle(&body, event_kind)),
        _ => Event::Other(lifecycle(&body, event_kind)),
    };
    Ok(Decoded { requester, events: vec![event] })
}

/// The body limit in force: the `max_body_bytes` setting, else the default.
fn body_limit() -> usize {
    match arbiter_sdk::config::get("max_body_bytes") {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(raw) => raw.trim().parse().unwrap_or_else(|_| {
            arbiter_sdk::log::warn(&format!(
                "setting `max_body_bytes` = `{raw}` is not a byte count; using {DEFAULT_MAX_BODY_BYTES}"
            ));
            DEFAULT_MAX_BODY_BYTES
        }),
    }
}

/// `hook_event_name`, checked to be a plain identifier so it can be recorded
/// and matched on as an event kind.
fn event_name(body: &Map<String, Value>) -> Result<&str, DecodeError> {
    let name = required_str(body, "hook_event_name")?;
    if name.is_empty()
        || name.len() > MAX_EVENT_NAME_LEN
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(malformed(format!(
            "`hook_event_name` `{}` is not an event name (1-{MAX_EVENT_NAME_LEN} letters, digits or `_`)",
            clip(name)
        )));
    }
    Ok(name)
}

fn requester(body: &Map<String, Value>) -> Result<Requester, DecodeError> {
    let session = required_str(body, "session_id")?;
    check_len("session_id", session, MAX_SESSION_LEN)?;
    if session.is_empty() {
        return Err(malformed("`session_id` is empty"));
    }
    let agent_id = optional_str(body, "agent_id")?.filter(|a| !a.is_empty());
    if let Some(agent_id) = agent_id {
        check_len("agent_id", agent_id, MAX_AGENT_LEN)?;
    }
    let attributes: Map<String, Value> =
        ATTRIBUTE_FIELDS.iter().filter_map(|k| body.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
    Ok(Requester {
        session: session.to_owned(),
        human: arbiter_sdk::config::get("human").filter(|h| !h.is_empty()),
        agent: Some(agent_id.unwrap_or(SERVICE).to_owned()),
        service: Some(SERVICE.to_owned()),
        roles: list_setting("roles"),
        scope: Vec::new(),
        // Inside a subagent the main session's agent delegated to it.
        delegation_chain: agent_id.map(|a| vec![SERVICE.to_owned(), a.to_owned()]).unwrap_or_default(),
        attributes_json: Value::Object(attributes).to_string(),
    })
}

/// A comma-separated setting as a list, blanks dropped.
fn list_setting(key: &str) -> Vec<String> {
    arbiter_sdk::config::get(key)
        .map(|v| v.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn action(body: &Map<String, Value>, event_kind: &str) -> Result<Action, DecodeError> {
    let original_tool = tool_name(body)?;
    let input = match body.get("tool_input") {
        Some(Value::Object(input)) => input,
        Some(_) => return Err(malformed("`tool_input` is not a JSON object")),
        None => return Err(malformed("missing `tool_input`")),
    };
    check_depth("tool_input", body.get("tool_input"))?;
    let (tool, operation, resource) = classify(original_tool, input)?;
    Ok(Action {
        tool,
        operation: operation.to_owned(),
        parameters_json: Value::Object(input.clone()).to_string(),
        resource,
        original_tool: original_tool.to_owned(),
        event_kind: event_kind.to_owned(),
        call_id: call_id(body)?,
    })
}

fn observation(body: &Map<String, Value>, event_kind: &str, output: &Value) -> Result<Observation, DecodeError> {
    let original_tool = tool_name(body)?;
    check_depth("tool_response", Some(output))?;
    // The input only classifies the tool here; its absence is not an error.
    let empty = Map::new();
    let input = match body.get("tool_input") {
        Some(Value::Object(input)) => input,
        _ => &empty,
    };
    let (tool, operation, _) = classify(original_tool, input)?;
    Ok(Observation {
        original_tool: original_tool.to_owned(),
        tool,
        operation: operation.to_owned(),
        output_json: output.to_string(),
        event_kind: event_kind.to_owned(),
        call_id: call_id(body)?,
    })
}

fn lifecycle(body: &Map<String, Value>, event_kind: &str) -> Lifecycle {
    let detail: Map<String, Value> =
        body.iter().filter(|(k, _)| !BASE_FIELDS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Lifecycle { event_kind: event_kind.to_owned(), detail_json: Value::Object(detail).to_string() }
}

fn tool_name(body: &Map<String, Value>) -> Result<&str, DecodeError> {
    let name = required_str(body, "tool_name")?;
    if name.is_empty() {
        return Err(malformed("`tool_name` is empty"));
    }
    check_len("tool_name", name, MAX_ORIGINAL_TOOL_LEN)?;
    Ok(name)
}

fn call_id(body: &Map<String, Value>) -> Result<Option<String>, DecodeError> {
    let id = optional_str(body, "tool_use_id")?;
    if let Some(id) = id {
        check_len("tool_use_id", id, MAX_CALL_ID_LEN)?;
    }
    Ok(id.map(str::to_owned))
}

/// Canonical (tool, operation, resource) for a Claude Code tool.
fn classify(name: &str, input: &Map<String, Value>) -> Result<(String, &'static str, Option<String>), DecodeError> {
    let field = |keys: &[&str]| keys.iter().find_map(|k| input.get(*k).and_then(Value::as_str));
    let (tool, operation, resource) = match name {
        "Bash" => ("shell".to_owned(), "exec", None),
        "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => {
            ("file".to_owned(), "write", field(&["file_path", "notebook_path"]).map(str::to_owned))
        }
        "Read" | "Glob" | "Grep" => {
            ("file".to_owned(), "read", field(&["file_path", "path", "pattern"]).map(str::to_owned))
        }
        "WebFetch" => ("network".to_owned(), "egress", field(&["url"]).map(str::to_owned)),
        "WebSearch" => ("network".to_owned(), "egress", None),
        _ => match mcp_parts(name) {
            Some((server, tool)) => ("mcp".to_owned(), "call", Some(format!("mcp://{server}/{tool}"))),
            None => (generic_tool(name)?, "call", None),
        },
    };
    if let Some(resource) = &resource {
        // Refused, not truncated: a clipped path could match a different policy.
        check_len("resource", resource, MAX_RESOURCE_LEN)?;
    }
    Ok((tool, operation, resource))
}

/// `mcp__<server>__<tool>` → (server, tool). The server name ends at the
/// first `__`; the tool name may contain more.
fn mcp_parts(name: &str) -> Option<(&str, &str)> {
    let (server, tool) = name.strip_prefix("mcp__")?.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// A vendor-specific tool name as a canonical one: lower case, characters
/// outside `[a-z0-9_-]` replaced by `_`, starting with a letter or digit and
/// at most 64 characters (the canonical-action schema's `tool` pattern).
fn generic_tool(name: &str) -> Result<String, DecodeError> {
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '_' }
        })
        .collect();
    let tool: String = mapped.trim_start_matches(['_', '-']).chars().take(MAX_TOOL_LEN).collect();
    if tool.is_empty() {
        return Err(malformed(format!("`tool_name` `{}` has no letter or digit", clip(name))));
    }
    Ok(tool)
}

fn required_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, DecodeError> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(malformed(format!("`{key}` is not a string"))),
        None => Err(malformed(format!("missing `{key}`"))),
    }
}

/// A string field that may be absent or null.
fn optional_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, DecodeError> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(malformed(format!("`{key}` is not a string"))),
    }
}

fn check_len(key: &str, value: &str, max: usize) -> Result<(), DecodeError> {
    if value.len() > max {
        return Err(malformed(format!("`{key}` is {} bytes, over the {max}-byte limit", value.len())));
    }
    Ok(())
}

/// Refuses a value nested deeper than [`MAX_JSON_DEPTH`]. Iterative, so the
/// check itself cannot overflow the stack.
fn check_depth(key: &str, value: Option<&Value>) -> Result<(), DecodeError> {
    let mut stack: Vec<(&Value, usize)> = value.map(|v| (v, 0)).into_iter().collect();
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Object(m) => Box::new(m.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        let depth = depth + 1;
        if depth > MAX_JSON_DEPTH {
            return Err(malformed(format!("`{key}` nests deeper than {MAX_JSON_DEPTH} levels")));
        }
        stack.extend(children.map(|c| (c, depth)));
    }
    Ok(())
}

/// `s` shortened for an error message, so a hostile value cannot bloat the
/// receipt that records the error.
fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}
