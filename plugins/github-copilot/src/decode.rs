//! Copilot hook payload (either dialect) → canonical events.

use arbiter_adapter_kit::{
    Classified, actions, check_depth, generic_tool, lifecycle, list_setting, malformed, mcp_resource, optional_str,
    parse_body, patch_targets, requester, required_str, resolve_path, split_mcp_double, tool_name,
};
use arbiter_sdk::{Action, DecodeError, Decoded, Event, HttpRequest, Intent, Observation, Requester};
use serde_json::{Map, Value};

use crate::event::{Dialect, HookEvent, Kind, hook_event};

/// The service every requester is attributed to.
const SERVICE: &str = "github-copilot";

/// The MCP server every Copilot CLI ships with; others come from the
/// `mcp_servers` setting.
const BUILTIN_MCP_SERVER: &str = "github-mcp-server";

/// Fields common to every hook payload (both dialects); the rest of a
/// lifecycle payload is its detail.
const BASE_FIELDS: &[&str] = &[
    "sessionId",
    "session_id",
    "timestamp",
    "cwd",
    "hook_event_name",
    "hookName",
    "transcriptPath",
    "transcript_path",
];

/// Decodes one Copilot hook request.
pub(crate) fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    let body = parse_body(req)?;
    let event = hook_event(req, &body)?;
    let requester = requester_of(req, &body, event.dialect)?;
    let name = event.name.as_str();
    let events = match event.kind {
        Kind::UserPrompt => {
            vec![Event::Intent(Intent { text: required_str(&body, "prompt")?.to_owned(), event_kind: event.name })]
        }
        Kind::PreToolUse | Kind::PermissionRequest => {
            tool_actions(&body, &event)?.into_iter().map(Event::Action).collect()
        }
        Kind::PostToolUse => {
            let output = body.get(event.dialect.pick("toolResult", "tool_result")).unwrap_or(&Value::Null);
            vec![Event::Observation(observation(&body, &event, output)?)]
        }
        Kind::PostToolUseFailure => {
            let output = body.get("error").unwrap_or(&Value::Null);
            vec![Event::Observation(observation(&body, &event, output)?)]
        }
        Kind::SessionStart => vec![Event::SessionStart(lifecycle(&body, BASE_FIELDS, name))],
        Kind::SessionEnd => vec![Event::SessionEnd(lifecycle(&body, BASE_FIELDS, name))],
        Kind::Other => vec![Event::Other(lifecycle(&body, BASE_FIELDS, name))],
    };
    Ok(Decoded { requester, events })
}

fn requester_of(req: &HttpRequest, body: &Map<String, Value>, dialect: Dialect) -> Result<Requester, DecodeError> {
    let session = required_str(body, dialect.pick("sessionId", "session_id"))?;
    let mut attributes = Map::new();
    if let Some(cwd) = body.get("cwd") {
        attributes.insert("cwd".to_owned(), cwd.clone());
    }
    if let Some(t) = body.get(dialect.pick("transcriptPath", "transcript_path")) {
        attributes.insert("transcript_path".to_owned(), t.clone());
    }
    attributes.insert("payload_format".to_owned(), Value::from(dialect.label()));
    if let Some(agent) = req.header("user-agent") {
        attributes.insert("user_agent".to_owned(), Value::from(agent));
    }
    requester(session, SERVICE, None, attributes)
}

fn tool_actions(body: &Map<String, Value>, event: &HookEvent) -> Result<Vec<Action>, DecodeError> {
    let name = tool_name(body, event.dialect.pick("toolName", "tool_name"))?;
    let input = tool_input(body, event.dialect)?;
    let classified = classify(name, &input, optional_str(body, "cwd")?)?;
    // Copilot gives tool calls no id in hook payloads.
    actions(classified, &input, name, &event.name, None)
}

/// The tool's arguments. camelCase payloads call them `toolArgs`
/// (`toolInput` on `permissionRequest`), the VS Code dialect `tool_input`;
/// either may be a JSON object or a string holding one (Copilot parses it
/// "when possible"). A tool without arguments may omit them.
fn tool_input(body: &Map<String, Value>, dialect: Dialect) -> Result<Map<String, Value>, DecodeError> {
    let keys: &[&str] = match dialect {
        Dialect::Camel => &["toolArgs", "toolInput"],
        Dialect::Snake => &["tool_input"],
    };
    let found = keys.iter().find_map(|k| body.get(*k).map(|v| (*k, v)));
    let (key, value) = found.unwrap_or((dialect.pick("toolArgs", "tool_input"), &Value::Null));
    let parsed;
    let value = match value {
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|_| malformed(format!("`{key}` is a string that does not hold a JSON object")))?;
            &parsed
        }
        v => v,
    };
    match value {
        Value::Object(m) => {
            check_depth(key, Some(value))?;
            Ok(m.clone())
        }
        Value::Null => Ok(Map::new()),
        _ => Err(malformed(format!("`{key}` is not a JSON object"))),
    }
}

fn observation(body: &Map<String, Value>, event: &HookEvent, output: &Value) -> Result<Observation, DecodeError> {
    let name = tool_name(body, event.dialect.pick("toolName", "tool_name"))?;
    check_depth(event.dialect.pick("toolResult", "tool_result"), Some(output))?;
    // The input only classifies the tool here; a bad one is not an error.
    let input = tool_input(body, event.dialect).unwrap_or_default();
    let classified = classify(name, &input, optional_str(body, "cwd")?)?;
    Ok(Observation {
        original_tool: name.to_owned(),
        tool: classified.tool,
        operation: classified.operation.to_owned(),
        output_json: output.to_string(),
        event_kind: event.name.clone(),
        call_id: None,
    })
}

/// Canonical tool, operation and targets of a Copilot tool call, by its
/// runtime name (camelCase dialect) or its Claude name (VS Code dialect).
/// Relative paths resolve against `cwd`.
pub(crate) fn classify(name: &str, input: &Map<String, Value>, cwd: Option<&str>) -> Result<Classified, DecodeError> {
    let text = |keys: &[&str]| keys.iter().find_map(|k| input.get(*k).and_then(Value::as_str));
    let path = |keys: &[&str]| text(keys).map(|p| resolve_path(cwd, p));
    let patch = || -> Vec<String> {
        text(&["input", "patch", "command"])
            .map(patch_targets)
            .unwrap_or_default()
            .iter()
            .map(|p| resolve_path(cwd, p))
            .collect()
    };
    Ok(match name {
        "bash" | "powershell" | "Bash" => Classified::new("shell", "exec", None),
        "view" | "Read" => Classified::new("file", "read", path(&["path", "file_path"])),
        "create" | "Write" => Classified::new("file", "write", path(&["path", "file_path"])),
        "apply_patch" => Classified { tool: "file".to_owned(), operation: "write", resources: patch() },
        "edit" | "str_replace_editor" | "str_replace" | "insert" | "Edit" | "MultiEdit" | "NotebookEdit" => {
            // `str_replace_editor` also views files; `apply_patch` is `Edit` in
            // the VS Code dialect and names its files in the patch.
            let operation = if text(&["command"]) == Some("view") { "read" } else { "write" };
            match path(&["path", "file_path", "notebook_path"]) {
                Some(p) => Classified::new("file", operation, Some(p)),
                None => Classified { tool: "file".to_owned(), operation, resources: patch() },
            }
        }
        "grep" | "rg" | "glob" | "Grep" | "Glob" => Classified::new("file", "read", path(&["path"])),
        "web_fetch" | "WebFetch" => Classified::new("network", "egress", text(&["url"]).map(str::to_owned)),
        "web_search" | "WebSearch" => Classified::new("network", "egress", None),
        _ => match mcp_parts(name) {
            Some((server, tool)) => Classified::new("mcp", "call", Some(mcp_resource(&server, &tool))),
            None => Classified::new(generic_tool(name)?, "call", None),
        },
    })
}

/// (server, tool) of an MCP tool: `mcp__<server>__<tool>`, or Copilot's
/// `<server>-<tool>` for a server it knows (`github-mcp-server` and the
/// `mcp_servers` setting; the longest matching name wins, since server names
/// contain `-` themselves).
fn mcp_parts(name: &str) -> Option<(String, String)> {
    if let Some((server, tool)) = split_mcp_double(name) {
        return Some((server.to_owned(), tool.to_owned()));
    }
    let mut servers = list_setting("mcp_servers");
    servers.push(BUILTIN_MCP_SERVER.to_owned());
    servers
        .iter()
        .filter_map(|s| {
            let tool = name.strip_prefix(s.as_str())?.strip_prefix('-')?;
            (!tool.is_empty()).then(|| (s.clone(), tool.to_owned()))
        })
        .max_by_key(|(s, _)| s.len())
}
