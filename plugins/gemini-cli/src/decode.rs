//! Gemini CLI hook payload → canonical events.

use arbiter_adapter_kit::{
    Classified, actions, check_depth, check_event_name, generic_tool, lifecycle, malformed, mcp_resource, object_field,
    optional_str, parse_body, path_event, requester, required_str, resolve_path, split_mcp_double, tool_name, urls_in,
};
use arbiter_sdk::{DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Observation, Requester};
use serde_json::{Map, Value, json};

/// The service every requester is attributed to.
const SERVICE: &str = "gemini-cli";

/// Fields common to every hook payload; the rest of a lifecycle payload is
/// its detail.
const BASE_FIELDS: &[&str] = &["session_id", "transcript_path", "cwd", "hook_event_name", "timestamp"];

/// Vendor facts copied into `requester.attributes-json` when present.
const ATTRIBUTE_FIELDS: &[&str] = &["cwd", "transcript_path", "mcp_context", "original_request_name"];

/// Decodes one Gemini CLI hook request.
pub(crate) fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    let body = parse_body(req)?;
    let event_kind = required_str(&body, "hook_event_name")?;
    check_event_name("`hook_event_name`", event_kind)?;
    if let Some(routed) = path_event(req)?
        && routed != event_kind
    {
        return Err(malformed(format!("the URL names event `{routed}` but the body is a `{event_kind}`")));
    }
    let requester = requester_of(&body)?;
    let events = match event_kind {
        "BeforeAgent" => vec![Event::Intent(Intent {
            text: required_str(&body, "prompt")?.to_owned(),
            event_kind: event_kind.to_owned(),
        })],
        "BeforeTool" => tool_actions(&body, event_kind)?.into_iter().map(Event::Action).collect(),
        "AfterTool" => vec![Event::Observation(observation(&body, event_kind)?)],
        "SessionStart" => vec![Event::SessionStart(lifecycle(&body, BASE_FIELDS, event_kind))],
        "SessionEnd" => vec![Event::SessionEnd(lifecycle(&body, BASE_FIELDS, event_kind))],
        _ => vec![Event::Other(summarised_lifecycle(&body, event_kind))],
    };
    Ok(Decoded { requester, events })
}

fn requester_of(body: &Map<String, Value>) -> Result<Requester, DecodeError> {
    let session = required_str(body, "session_id")?;
    let attributes: Map<String, Value> =
        ATTRIBUTE_FIELDS.iter().filter_map(|k| body.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
    requester(session, SERVICE, None, attributes)
}

fn tool_actions(body: &Map<String, Value>, event_kind: &str) -> Result<Vec<arbiter_sdk::Action>, DecodeError> {
    let name = tool_name(body, "tool_name")?;
    let input = object_field(body, "tool_input")?;
    let classified = classify(name, input, body)?;
    // Gemini CLI gives tool calls no id in hook payloads.
    actions(classified, input, name, event_kind, None)
}

fn observation(body: &Map<String, Value>, event_kind: &str) -> Result<Observation, DecodeError> {
    let name = tool_name(body, "tool_name")?;
    let output = body.get("tool_response").unwrap_or(&Value::Null);
    check_depth("tool_response", Some(output))?;
    // The input only classifies the tool here; its absence is not an error.
    let empty = Map::new();
    let input = match body.get("tool_input") {
        Some(Value::Object(input)) => input,
        _ => &empty,
    };
    let classified = classify(name, input, body)?;
    Ok(Observation {
        original_tool: name.to_owned(),
        tool: classified.tool,
        operation: classified.operation.to_owned(),
        output_json: output.to_string(),
        event_kind: event_kind.to_owned(),
        call_id: None,
    })
}

/// Canonical tool, operation and targets of a Gemini CLI tool call. Relative
/// paths are resolved against the payload's `cwd`.
pub(crate) fn classify(
    name: &str,
    input: &Map<String, Value>,
    body: &Map<String, Value>,
) -> Result<Classified, DecodeError> {
    let cwd = optional_str(body, "cwd")?;
    let path =
        |keys: &[&str]| keys.iter().find_map(|k| input.get(*k).and_then(Value::as_str)).map(|p| resolve_path(cwd, p));
    Ok(match name {
        "run_shell_command" => Classified::new("shell", "exec", None),
        "read_file" => Classified::new("file", "read", path(&["file_path", "absolute_path", "path"])),
        "list_directory" | "glob" | "grep_search" | "search_file_content" => {
            Classified::new("file", "read", path(&["dir_path", "path"]))
        }
        "read_many_files" => Classified {
            tool: "file".to_owned(),
            operation: "read",
            resources: strings(input, &["include", "paths"]).into_iter().map(|p| resolve_path(cwd, p)).collect(),
        },
        "write_file" | "replace" => Classified::new("file", "write", path(&["file_path", "absolute_path"])),
        "web_fetch" => Classified {
            tool: "network".to_owned(),
            operation: "egress",
            resources: match input.get("url").and_then(Value::as_str) {
                Some(url) => vec![url.to_owned()],
                None => input.get("prompt").and_then(Value::as_str).map(urls_in).unwrap_or_default(),
            },
        },
        "google_web_search" => Classified::new("network", "egress", None),
        _ => match mcp_parts(name, body) {
            Some((server, tool)) => Classified::new("mcp", "call", Some(mcp_resource(&server, &tool))),
            None => Classified::new(generic_tool(name)?, "call", None),
        },
    })
}

/// Every string in the fields `keys` (each a string or an array of strings).
fn strings<'a>(input: &'a Map<String, Value>, keys: &[&str]) -> Vec<&'a str> {
    keys.iter()
        .filter_map(|k| input.get(*k))
        .flat_map(|v| match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// (server, tool) of an MCP tool: from `mcp_context` when Gemini sends it,
/// else from the name, `mcp_<server>_<tool>` (0.61; the server name has no
/// `_`) or `mcp__<server>__<tool>`.
fn mcp_parts(name: &str, body: &Map<String, Value>) -> Option<(String, String)> {
    let context = body.get("mcp_context").and_then(Value::as_object);
    if let Some(server) = context.and_then(|c| c.get("server_name")).and_then(Value::as_str).filter(|s| !s.is_empty()) {
        let tool = context
            .and_then(|c| c.get("tool_name"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .or_else(|| name.strip_prefix(&format!("mcp_{server}_")))
            .or_else(|| name.strip_prefix(&format!("mcp__{server}__")))
            .unwrap_or(name);
        return Some((server.to_owned(), tool.to_owned()));
    }
    if let Some((server, tool)) = split_mcp_double(name) {
        return Some((server.to_owned(), tool.to_owned()));
    }
    let (server, tool) = name.strip_prefix("mcp_")?.split_once('_')?;
    (!server.is_empty() && !tool.is_empty()).then(|| (server.to_owned(), tool.to_owned()))
}

/// A lifecycle event whose model requests and responses are summarised: the
/// whole conversation is in the transcript, and copying it into every
/// `BeforeToolSelection`/`BeforeModel`/`AfterModel` entry would bloat the
/// session log.
fn summarised_lifecycle(body: &Map<String, Value>, event_kind: &str) -> Lifecycle {
    let mut trimmed = body.clone();
    if let Some(request) = trimmed.get_mut("llm_request") {
        *request = json!({
            "model": request.get("model").cloned().unwrap_or(Value::Null),
            "messages": request.get("messages").and_then(Value::as_array).map_or(0, Vec::len),
        });
    }
    if let Some(response) = trimmed.get_mut("llm_response") {
        *response = json!({
            "candidates": response.get("candidates").and_then(Value::as_array).map_or(0, Vec::len),
            "usageMetadata": response.get("usageMetadata").cloned().unwrap_or(Value::Null),
        });
    }
    lifecycle(&trimmed, BASE_FIELDS, event_kind)
}
