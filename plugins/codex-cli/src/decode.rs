//! Codex CLI hook payload → canonical events.

use arbiter_adapter_kit::{
    Classified, actions, call_id, check_depth, check_event_name, generic_tool, lifecycle, malformed, mcp_resource,
    object_field, optional_str, parse_body, patch_targets, path_event, requester, required_str, resolve_path,
    split_mcp_double, tool_name,
};
use arbiter_sdk::{Action, DecodeError, Decoded, Event, HttpRequest, Intent, Observation, Requester};
use serde_json::{Map, Value};

/// The service every requester is attributed to.
const SERVICE: &str = "codex-cli";

/// Fields common to every hook payload; the rest of a lifecycle payload is
/// its detail.
const BASE_FIELDS: &[&str] = &[
    "session_id",
    "turn_id",
    "transcript_path",
    "cwd",
    "hook_event_name",
    "model",
    "permission_mode",
    "agent_id",
    "agent_type",
];

/// Vendor facts copied into `requester.attributes-json` when present.
const ATTRIBUTE_FIELDS: &[&str] = &["cwd", "transcript_path", "permission_mode", "model", "turn_id", "agent_type"];

/// Decodes one Codex CLI hook request.
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
        "UserPromptSubmit" => vec![Event::Intent(Intent {
            text: required_str(&body, "prompt")?.to_owned(),
            event_kind: event_kind.to_owned(),
        })],
        "PreToolUse" | "PermissionRequest" => tool_actions(&body, event_kind)?.into_iter().map(Event::Action).collect(),
        "PostToolUse" => vec![Event::Observation(observation(&body, event_kind)?)],
        "SessionStart" => vec![Event::SessionStart(lifecycle(&body, BASE_FIELDS, event_kind))],
        _ => vec![Event::Other(lifecycle(&body, BASE_FIELDS, event_kind))],
    };
    Ok(Decoded { requester, events })
}

fn requester_of(body: &Map<String, Value>) -> Result<Requester, DecodeError> {
    let session = required_str(body, "session_id")?;
    let agent_id = optional_str(body, "agent_id")?;
    let attributes: Map<String, Value> =
        ATTRIBUTE_FIELDS.iter().filter_map(|k| body.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
    requester(session, SERVICE, agent_id, attributes)
}

fn tool_actions(body: &Map<String, Value>, event_kind: &str) -> Result<Vec<Action>, DecodeError> {
    let name = tool_name(body, "tool_name")?;
    let input = object_field(body, "tool_input")?;
    let classified = classify(name, input, optional_str(body, "cwd")?)?;
    actions(classified, input, name, event_kind, call_id(body, "tool_use_id")?)
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
    let classified = classify(name, input, optional_str(body, "cwd")?)?;
    let call_id = call_id(body, "tool_use_id")?;
    Ok(Observation {
        original_tool: name.to_owned(),
        tool: classified.tool,
        operation: classified.operation.to_owned(),
        output_json: output.to_string(),
        event_kind: event_kind.to_owned(),
        call_id: call_id.map(str::to_owned),
    })
}

/// Canonical tool, operation and targets of a Codex tool call. Codex reports
/// every shell tool as `Bash` with `{"command": ...}`, and `apply_patch` with
/// the patch text in `command`; relative paths resolve against `cwd`.
pub(crate) fn classify(name: &str, input: &Map<String, Value>, cwd: Option<&str>) -> Result<Classified, DecodeError> {
    let text = |keys: &[&str]| keys.iter().find_map(|k| input.get(*k).and_then(Value::as_str));
    let path = |keys: &[&str]| text(keys).map(|p| resolve_path(cwd, p));
    Ok(match name {
        "Bash" | "shell" | "local_shell" | "shell_command" | "exec_command" | "unified_exec" | "container.exec" => {
            Classified::new("shell", "exec", None)
        }
        "apply_patch" => Classified {
            tool: "file".to_owned(),
            operation: "write",
            resources: text(&["command", "input", "patch"])
                .map(patch_targets)
                .unwrap_or_default()
                .iter()
                .map(|p| resolve_path(cwd, p))
                .collect(),
        },
        "view_image" | "read_file" => Classified::new("file", "read", path(&["path", "file_path"])),
        "list_dir" | "grep_files" => Classified::new("file", "read", path(&["dir_path", "path"])),
        "web_search" | "NetworkAccess" => Classified::new("network", "egress", None),
        _ => match split_mcp_double(name) {
            Some((server, tool)) => Classified::new("mcp", "call", Some(mcp_resource(server, tool))),
            None => Classified::new(generic_tool(name)?, "call", None),
        },
    })
}
