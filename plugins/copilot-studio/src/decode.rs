//! Copilot Studio request → canonical events.

use arbiter_sdk::{Action, DecodeError, Decoded, Event, HttpRequest, Intent, Observation, Requester};
use serde_json::{Map, Value};

use crate::{PATH_ANALYZE, PATH_VALIDATE};

/// Largest body accepted unless the `max_body_bytes` setting says otherwise:
/// the host's default body limit (1 MiB), so the plugin never parses more
/// than the host would have let through by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Deepest nesting accepted in `inputValues` and in each previous tool's
/// `outputs`. Policies and the host walk these values, so a hostile depth is
/// refused here rather than costing every later stage.
pub const MAX_JSON_DEPTH: usize = 64;

/// Most previous tool outputs accepted in one request. Each becomes a
/// session-log entry, so a request cannot flood the log.
pub const MAX_OBSERVATIONS: usize = 128;

/// `plannerContext.thought` is kept in the attributes cut to this many
/// characters: it is the planner's prose, useful to a reviewer, not an id.
pub const MAX_THOUGHT_CHARS: usize = 1024;

/// The requester session of a `/validate` call, which has no conversation.
pub const VALIDATE_SESSION: &str = "copilot-studio-validate";

/// Event kind of the intent (`plannerContext.userMessage`).
pub const EVENT_INTENT: &str = "userMessage";

/// Event kind of an observation (one previous tool output).
pub const EVENT_OBSERVATION: &str = "previousToolOutput";

/// Event kind of the action (the tool call to analyze).
pub const EVENT_ACTION: &str = "analyzeToolExecution";

// Length caps from wit/schemas/canonical-action.v1.json, so every action this
// plugin emits is one the host can record without truncating. Ids copied into
// the attributes share the 256-byte cap: they are refused, not clipped, since
// a clipped tenant or agent id could match a different policy.
const MAX_ID_LEN: usize = 256;
const MAX_TOOL_LEN: usize = 64;
const MAX_RESOURCE_LEN: usize = 4096;

/// The service every requester is attributed to.
const SERVICE: &str = "copilot-studio";

/// `inputValues` keys whose string value is the action's resource, in order
/// of preference (compared case-insensitively).
const RESOURCE_KEYS: &[&str] = &["to", "url", "path", "file"];

/// Spellings of the previous tool outputs: real traffic's first, then the
/// documented one. Both are read when both are present.
const PREVIOUS_OUTPUTS_KEYS: &[&str] = &["previousToolsOutputs", "previousToolOutputs"];

const PLANNER: &str = "plannerContext";
const TOOL_DEFINITION: &str = "toolDefinition";
const METADATA: &str = "conversationMetadata";
const CORRELATION_HEADER: &str = "x-ms-correlation-id";

fn malformed(message: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(message.into())
}

/// Decodes one Copilot Studio request.
pub(crate) fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    let limit = body_limit();
    if req.body.len() > limit {
        return Err(malformed(format!("body is {} bytes, over the {limit}-byte limit", req.body.len())));
    }
    match req.path.as_str() {
        PATH_VALIDATE => validate(req),
        PATH_ANALYZE => analyze(req),
        other => Err(DecodeError::Unsupported(format!(
            "path `{}` is not a Copilot Studio endpoint (`{PATH_VALIDATE}` or `{PATH_ANALYZE}`)",
            clip(other)
        ))),
    }
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

/// `/validate`: a health check with an empty body. No events; the host then
/// asks `encode` for the neutral reply. Whatever body comes is ignored.
fn validate(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    let mut attributes = Map::new();
    correlation_id(req, &mut attributes)?;
    Ok(Decoded {
        requester: Requester {
            session: VALIDATE_SESSION.to_owned(),
            service: Some(SERVICE.to_owned()),
            attributes_json: Value::Object(attributes).to_string(),
            ..Requester::default()
        },
        events: Vec::new(),
    })
}

/// `/analyze-tool-execution`: intent, observations, then the action.
fn analyze(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    if req.body.is_empty() {
        return Err(malformed("body is empty"));
    }
    let body: Value =
        serde_json::from_slice(&req.body).map_err(|e| malformed(format!("body is not valid JSON: {e}")))?;
    let Value::Object(body) = body else {
        return Err(malformed("body is not a JSON object"));
    };
    let planner = required_object(&body, "", PLANNER)?;
    let tool_definition = required_object(&body, "", TOOL_DEFINITION)?;
    let metadata = required_object(&body, "", METADATA)?;

    let requester = requester(req, planner, tool_definition, metadata)?;
    let mut events = Vec::new();
    if let Some(text) = optional_str(planner, PLANNER, "userMessage")?.filter(|t| !t.is_empty()) {
        events.push(Event::Intent(Intent { text: text.to_owned(), event_kind: EVENT_INTENT.to_owned() }));
    }
    events.extend(observations(planner)?.into_iter().map(Event::Observation));
    events.push(Event::Action(action(&body, tool_definition, metadata)?));
    Ok(Decoded { requester, events })
}

fn requester(
    req: &HttpRequest,
    planner: &Map<String, Value>,
    tool_definition: &Map<String, Value>,
    metadata: &Map<String, Value>,
) -> Result<Requester, DecodeError> {
    let agent = optional_object(metadata, METADATA, "agent")?;
    let user = optional_object(metadata, METADATA, "user")?;
    let trigger = optional_object(metadata, METADATA, "trigger")?;
    let agent_path = format!("{METADATA}.agent");
    let user_path = format!("{METADATA}.user");
    let trigger_path = format!("{METADATA}.trigger");

    let conversation_id = id(metadata, METADATA, "conversationId")?;
    let plan_id = id(metadata, METADATA, "planId")?;
    let session = conversation_id.or(plan_id).ok_or_else(|| {
        malformed(format!("neither `{METADATA}.conversationId` nor `{METADATA}.planId` names the conversation"))
    })?;

    let agent_id = agent.map(|a| id(a, &agent_path, "id")).transpose()?.flatten();
    let agent_name = agent.map(|a| id(a, &agent_path, "name")).transpose()?.flatten();
    let user_id = user.map(|u| id(u, &user_path, "id")).transpose()?.flatten();
    let tenant_id = match agent.map(|a| id(a, &agent_path, "tenantId")).transpose()?.flatten() {
        Some(t) => Some(t),
        None => user.map(|u| id(u, &user_path, "tenantId")).transpose()?.flatten(),
    };

    let mut attributes = Map::new();
    let mut put = |key: &str, value: Option<&str>| {
        if let Some(v) = value {
            attributes.insert(key.to_owned(), Value::String(v.to_owned()));
        }
    };
    put("tenantId", tenant_id);
    put("environmentId", agent.map(|a| id(a, &agent_path, "environmentId")).transpose()?.flatten());
    put("agentId", agent_id);
    put("agentName", agent_name);
    put("channelId", id(metadata, METADATA, "channelId")?);
    put("planId", plan_id);
    put("planStepId", id(metadata, METADATA, "planStepId")?);
    put("messageId", id(metadata, METADATA, "messageId")?);
    put("parentAgentComponentId", id(metadata, METADATA, "parentAgentComponentId")?);
    put("incomingClientIp", id(metadata, METADATA, "incomingClientIp")?);
    put("triggerId", trigger.map(|t| id(t, &trigger_path, "id")).transpose()?.flatten());
    put("triggerSchemaName", trigger.map(|t| id(t, &trigger_path, "schemaName")).transpose()?.flatten());
    put("toolName", id(tool_definition, TOOL_DEFINITION, "name")?);
    put("toolType", id(tool_definition, TOOL_DEFINITION, "type")?);
    if let Some(thought) = optional_str(planner, PLANNER, "thought")?.filter(|t| !t.is_empty()) {
        attributes.insert("thought".to_owned(), Value::String(clip_to(thought, MAX_THOUGHT_CHARS)));
    }
    if let Some(published) = agent.and_then(|a| a.get("isPublished")).and_then(Value::as_bool) {
        attributes.insert("isPublished".to_owned(), Value::Bool(published));
    }
    correlation_id(req, &mut attributes)?;

    Ok(Requester {
        session: session.to_owned(),
        human: user_id.map(str::to_owned).or_else(|| arbiter_sdk::config::get("human").filter(|h| !h.is_empty())),
        agent: agent_name.or(agent_id).map(str::to_owned),
        service: Some(SERVICE.to_owned()),
        roles: list_setting("roles"),
        scope: Vec::new(),
        delegation_chain: Vec::new(),
        attributes_json: Value::Object(attributes).to_string(),
    })
}

/// Copies the `x-ms-correlation-id` header into the attributes as `correlationId`.
fn correlation_id(req: &HttpRequest, attributes: &mut Map<String, Value>) -> Result<(), DecodeError> {
    if let Some(value) = req.header(CORRELATION_HEADER).filter(|v| !v.is_empty()) {
        check_len(&format!("header {CORRELATION_HEADER}"), value, MAX_ID_LEN)?;
        attributes.insert("correlationId".to_owned(), Value::String(value.to_owned()));
    }
    Ok(())
}

/// A comma-separated setting as a list, blanks dropped.
fn list_setting(key: &str) -> Vec<String> {
    arbiter_sdk::config::get(key)
        .map(|v| v.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn action(
    body: &Map<String, Value>,
    tool_definition: &Map<String, Value>,
    metadata: &Map<String, Value>,
) -> Result<Action, DecodeError> {
    let original_tool = id(tool_definition, TOOL_DEFINITION, "id")?
        .ok_or_else(|| malformed(format!("`{TOOL_DEFINITION}.id` is missing or empty")))?;
    let tool = canonical_tool(original_tool)
        .ok_or_else(|| malformed(format!("`{TOOL_DEFINITION}.id` `{}` has no letter or digit", clip(original_tool))))?;
    let parameters = match body.get("inputValues") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(values)) => values.clone(),
        Some(_) => return Err(malformed("`inputValues` is not a JSON object")),
    };
    check_depth("inputValues", body.get("inputValues"))?;
    let resource = resource(&parameters).map(str::to_owned);
    if let Some(resource) = &resource {
        // Refused, not truncated: a clipped address could match a different policy.
        check_len("resource", resource, MAX_RESOURCE_LEN)?;
    }
    Ok(Action {
        tool,
        operation: "call".to_owned(),
        resource,
        parameters_json: Value::Object(parameters).to_string(),
        original_tool: original_tool.to_owned(),
        event_kind: EVENT_ACTION.to_owned(),
        call_id: id(metadata, METADATA, "planStepId")?.map(str::to_owned),
    })
}

/// The first non-empty string among the [`RESOURCE_KEYS`] of `inputValues`.
fn resource(parameters: &Map<String, Value>) -> Option<&str> {
    RESOURCE_KEYS.iter().find_map(|wanted| {
        parameters
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(wanted))
            .find_map(|(_, value)| value.as_str().filter(|s| !s.is_empty()))
    })
}

/// One observation per previous tool output, both spellings read.
fn observations(planner: &Map<String, Value>) -> Result<Vec<Observation>, DecodeError> {
    let mut entries = Vec::new();
    for key in PREVIOUS_OUTPUTS_KEYS {
        match planner.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => entries.extend(list.iter().enumerate().map(|(i, e)| (*key, i, e))),
            Some(_) => return Err(malformed(format!("`{PLANNER}.{key}` is not an array"))),
        }
    }
    if entries.len() > MAX_OBSERVATIONS {
        return Err(malformed(format!(
            "{} previous tool outputs, over the limit of {MAX_OBSERVATIONS}",
            entries.len()
        )));
    }
    entries
        .into_iter()
        .map(|(key, i, entry)| {
            let path = format!("{PLANNER}.{key}[{i}]");
            let Value::Object(entry) = entry else {
                return Err(malformed(format!("`{path}` is not a JSON object")));
            };
            let original_tool = match id(entry, &path, "toolId")? {
                Some(tool_id) => tool_id,
                None => id(entry, &path, "toolName")?
                    .ok_or_else(|| malformed(format!("`{path}` names no tool (`toolId` or `toolName`)")))?,
            };
            let tool = canonical_tool(original_tool)
                .ok_or_else(|| malformed(format!("`{path}` tool `{}` has no letter or digit", clip(original_tool))))?;
            let outputs = entry.get("outputs").unwrap_or(&Value::Null);
            check_depth(&format!("{path}.outputs"), Some(outputs))?;
            Ok(Observation {
                original_tool: original_tool.to_owned(),
                tool,
                operation: "call".to_owned(),
                output_json: outputs.to_string(),
                event_kind: EVENT_OBSERVATION.to_owned(),
                call_id: None,
            })
        })
        .collect()
}

/// The canonical tool for a Copilot Studio tool id (see the crate docs):
/// the connector of `<prefix>.action.<Connector>-<Operation>`, else the whole
/// id, lower-cased, with characters outside `[a-z0-9_-]` replaced by `_`,
/// without leading or trailing `_`/`-`, at most 64 characters. `None` when
/// nothing of the id survives.
pub fn canonical_tool(id: &str) -> Option<String> {
    let action = match id.rsplit_once(".action.") {
        Some((_, rest)) => Some(rest),
        None => id.strip_prefix("action."),
    };
    let connector = action.map(|a| a.split_once('-').map_or(a, |(connector, _)| connector));
    [connector, action, Some(id)].into_iter().flatten().find_map(sanitize)
}

fn sanitize(name: &str) -> Option<String> {
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '_' }
        })
        .collect();
    let cut: String = mapped.trim_matches(['_', '-']).chars().take(MAX_TOOL_LEN).collect();
    let tool = cut.trim_end_matches(['_', '-']);
    (!tool.is_empty()).then(|| tool.to_owned())
}

fn field_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

fn required_object<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<&'a Map<String, Value>, DecodeError> {
    optional_object(obj, parent, key)?.ok_or_else(|| malformed(format!("missing `{}`", field_path(parent, key))))
}

/// An object field that may be absent or null.
fn optional_object<'a>(
    obj: &'a Map<String, Value>,
    parent: &str,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, DecodeError> {
    match obj.get(key) {
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(malformed(format!("`{}` is not a JSON object", field_path(parent, key)))),
    }
}

/// A string field that may be absent or null.
fn optional_str<'a>(obj: &'a Map<String, Value>, parent: &str, key: &str) -> Result<Option<&'a str>, DecodeError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(malformed(format!("`{}` is not a string", field_path(parent, key)))),
    }
}

/// An id field: a string of at most 256 bytes; absent, null or empty is `None`.
fn id<'a>(obj: &'a Map<String, Value>, parent: &str, key: &str) -> Result<Option<&'a str>, DecodeError> {
    let value = optional_str(obj, parent, key)?.filter(|v| !v.is_empty());
    if let Some(v) = value {
        check_len(&field_path(parent, key), v, MAX_ID_LEN)?;
    }
    Ok(value)
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

/// `s` cut to `max` characters, marked with `...` when cut.
fn clip_to(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}...")
    }
}

/// `s` shortened for an error message, so a hostile value cannot bloat the
/// receipt that records the error.
fn clip(s: &str) -> String {
    clip_to(s, 80)
}
