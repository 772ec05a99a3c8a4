//! Reading a hook body safely: limits, typed fields, requester, actions.

use arbiter_sdk::{Action, DecodeError, HttpRequest, Lifecycle, Requester};
use serde_json::{Map, Value};

use crate::Classified;
use crate::targets::MAX_TARGETS;

/// Largest body accepted unless the `max_body_bytes` setting says otherwise:
/// the host's default body limit (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Deepest nesting accepted in tool inputs and outputs. Policies and the host
/// walk these values, so a hostile depth is refused here.
pub const MAX_JSON_DEPTH: usize = 64;

// Length caps from wit/schemas/canonical-action.v1.json, so every action an
// adapter emits is one the host can record without truncating.
const MAX_SESSION_LEN: usize = 256;
const MAX_AGENT_LEN: usize = 256;
const MAX_ORIGINAL_TOOL_LEN: usize = 256;
const MAX_TOOL_LEN: usize = 64;
const MAX_EVENT_NAME_LEN: usize = 64;
const MAX_RESOURCE_LEN: usize = 4096;
const MAX_CALL_ID_LEN: usize = 256;

/// A [`DecodeError::Malformed`] with `message`.
pub fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(message.into())
}

/// The body limit in force: the `max_body_bytes` setting, else
/// [`DEFAULT_MAX_BODY_BYTES`].
pub fn body_limit() -> usize {
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

/// The body as a JSON object, refused when over [`body_limit`], not JSON, or
/// not an object.
///
/// # Errors
/// [`DecodeError::Malformed`] naming the problem.
pub fn parse_body(req: &HttpRequest) -> Result<Map<String, Value>, DecodeError> {
    let limit = body_limit();
    if req.body.len() > limit {
        return Err(malformed(format!("body is {} bytes, over the {limit}-byte limit", req.body.len())));
    }
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
    match body {
        Value::Object(body) => Ok(body),
        _ => Err(malformed("body is not a JSON object")),
    }
}

/// Checks that `name` (read from `what`) is a plain identifier, so it can be
/// recorded and matched on as an event kind.
///
/// # Errors
/// [`DecodeError::Malformed`] when it is empty, too long or not `[A-Za-z0-9_]`.
pub fn check_event_name(what: &str, name: &str) -> Result<(), DecodeError> {
    if name.is_empty()
        || name.len() > MAX_EVENT_NAME_LEN
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(malformed(format!(
            "{what} `{}` is not an event name (1-{MAX_EVENT_NAME_LEN} letters, digits or `_`)",
            clip(name)
        )));
    }
    Ok(())
}

/// The event named by the request path (`/v1/hooks/{integration}/{event}`
/// reaches the plugin as `path = "/{event}"`), if any.
///
/// # Errors
/// [`DecodeError::Malformed`] when the path is not `""`, `/` or `/<event name>`.
pub fn path_event(req: &HttpRequest) -> Result<Option<&str>, DecodeError> {
    let name = match req.path.as_str() {
        "" | "/" => return Ok(None),
        path => path.strip_prefix('/').unwrap_or(path),
    };
    check_event_name("path event", name)?;
    Ok(Some(name))
}

/// The string field `key`.
///
/// # Errors
/// [`DecodeError::Malformed`] when it is missing or not a string.
pub fn required_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, DecodeError> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(malformed(format!("`{key}` is not a string"))),
        None => Err(malformed(format!("missing `{key}`"))),
    }
}

/// The string field `key`, which may be absent or null.
///
/// # Errors
/// [`DecodeError::Malformed`] when it is present but not a string.
pub fn optional_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, DecodeError> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(malformed(format!("`{key}` is not a string"))),
    }
}

/// The object field `key`, checked to nest at most [`MAX_JSON_DEPTH`] levels.
///
/// # Errors
/// [`DecodeError::Malformed`] when it is missing, not an object, or too deep.
pub fn object_field<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a Map<String, Value>, DecodeError> {
    match body.get(key) {
        Some(value @ Value::Object(map)) => {
            check_depth(key, Some(value))?;
            Ok(map)
        }
        Some(_) => Err(malformed(format!("`{key}` is not a JSON object"))),
        None => Err(malformed(format!("missing `{key}`"))),
    }
}

/// The tool name in field `key`: a non-empty string of at most 256 bytes.
///
/// # Errors
/// [`DecodeError::Malformed`] when it is missing, not a string, empty or too long.
pub fn tool_name<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, DecodeError> {
    let name = required_str(body, key)?;
    if name.is_empty() {
        return Err(malformed(format!("`{key}` is empty")));
    }
    check_len(key, name, MAX_ORIGINAL_TOOL_LEN)?;
    Ok(name)
}

/// The vendor's id for a tool call in field `key`, if present: at most 256 bytes.
///
/// # Errors
/// [`DecodeError::Malformed`] when it is not a string or too long.
pub fn call_id<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, DecodeError> {
    let id = optional_str(body, key)?;
    if let Some(id) = id {
        check_len(key, id, MAX_CALL_ID_LEN)?;
    }
    Ok(id)
}

/// Refuses `value` when it is longer than `max` bytes.
///
/// # Errors
/// [`DecodeError::Malformed`] naming `key` and both lengths.
pub fn check_len(key: &str, value: &str, max: usize) -> Result<(), DecodeError> {
    if value.len() > max {
        return Err(malformed(format!("`{key}` is {} bytes, over the {max}-byte limit", value.len())));
    }
    Ok(())
}

/// Refuses a value nested deeper than [`MAX_JSON_DEPTH`]. Iterative, so the
/// check itself cannot overflow the stack.
///
/// # Errors
/// [`DecodeError::Malformed`] naming `key`.
pub fn check_depth(key: &str, value: Option<&Value>) -> Result<(), DecodeError> {
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
pub fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

/// A comma-separated setting as a list, blanks dropped.
pub fn list_setting(key: &str) -> Vec<String> {
    arbiter_sdk::config::get(key)
        .map(|v| v.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// True when setting `key` is exactly `value` (after trimming).
pub fn setting_is(key: &str, value: &str) -> bool {
    arbiter_sdk::config::get(key).is_some_and(|v| v.trim() == value)
}

/// The requester: `session` from the payload, the human from the `human`
/// setting, roles from the comma-separated `roles` setting, the agent (the
/// sub-agent when the vendor names one, else the vendor's service) and the
/// vendor facts in `attributes`.
///
/// # Errors
/// [`DecodeError::Malformed`] when the session is empty or an id is too long.
pub fn requester(
    session: &str,
    service: &str,
    sub_agent: Option<&str>,
    attributes: Map<String, Value>,
) -> Result<Requester, DecodeError> {
    if session.is_empty() {
        return Err(malformed("the session id is empty"));
    }
    check_len("session id", session, MAX_SESSION_LEN)?;
    let sub_agent = sub_agent.filter(|a| !a.is_empty());
    if let Some(agent) = sub_agent {
        check_len("agent id", agent, MAX_AGENT_LEN)?;
    }
    Ok(Requester {
        session: session.to_owned(),
        human: arbiter_sdk::config::get("human").map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()),
        agent: Some(sub_agent.unwrap_or(service).to_owned()),
        service: Some(service.to_owned()),
        roles: list_setting("roles"),
        scope: Vec::new(),
        // Inside a sub-agent the main session's agent delegated to it.
        delegation_chain: sub_agent.map(|a| vec![service.to_owned(), a.to_owned()]).unwrap_or_default(),
        attributes_json: Value::Object(attributes).to_string(),
    })
}

/// A vendor-specific tool name as a canonical one: lower case, characters
/// outside `[a-z0-9_-]` replaced by `_`, starting with a letter or digit and
/// at most 64 characters (the canonical-action schema's `tool` pattern).
///
/// # Errors
/// [`DecodeError::Malformed`] when no letter or digit is left.
pub fn generic_tool(name: &str) -> Result<String, DecodeError> {
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '_' }
        })
        .collect();
    let tool: String = mapped.trim_start_matches(['_', '-']).chars().take(MAX_TOOL_LEN).collect();
    if tool.is_empty() {
        return Err(malformed(format!("tool name `{}` has no letter or digit", clip(name))));
    }
    Ok(tool)
}

/// The actions for one tool call: one per target of `classified`, or one
/// without a resource. Each carries `input` unchanged as its parameters.
///
/// # Errors
/// [`DecodeError::Malformed`] when the tool name or call id is too long, a
/// target is over 4096 bytes (refused, not clipped: a clipped path could match
/// a different policy) or there are more than [`MAX_TARGETS`] targets.
pub fn actions(
    classified: Classified,
    input: &Map<String, Value>,
    original_tool: &str,
    event_kind: &str,
    call_id: Option<&str>,
) -> Result<Vec<Action>, DecodeError> {
    if original_tool.is_empty() {
        return Err(malformed("the tool name is empty"));
    }
    check_len("tool name", original_tool, MAX_ORIGINAL_TOOL_LEN)?;
    if let Some(id) = call_id {
        check_len("call id", id, MAX_CALL_ID_LEN)?;
    }
    let mut resources: Vec<String> = Vec::with_capacity(classified.resources.len());
    for r in classified.resources {
        check_len("resource", &r, MAX_RESOURCE_LEN)?;
        if !resources.contains(&r) {
            resources.push(r);
        }
    }
    if resources.len() > MAX_TARGETS {
        return Err(malformed(format!(
            "`{}` acts on {} targets, over the {MAX_TARGETS}-target limit",
            clip(original_tool),
            resources.len()
        )));
    }
    let parameters_json = Value::Object(input.clone()).to_string();
    let action = |resource: Option<String>| Action {
        tool: classified.tool.clone(),
        operation: classified.operation.to_owned(),
        parameters_json: parameters_json.clone(),
        resource,
        original_tool: original_tool.to_owned(),
        event_kind: event_kind.to_owned(),
        call_id: call_id.map(str::to_owned),
    };
    if resources.is_empty() {
        return Ok(vec![action(None)]);
    }
    Ok(resources.into_iter().map(|r| action(Some(r))).collect())
}

/// A lifecycle event whose detail is every field of `body` outside `base`.
pub fn lifecycle(body: &Map<String, Value>, base: &[&str], event_kind: &str) -> Lifecycle {
    let detail: Map<String, Value> =
        body.iter().filter(|(k, _)| !base.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Lifecycle { event_kind: event_kind.to_owned(), detail_json: Value::Object(detail).to_string() }
}
