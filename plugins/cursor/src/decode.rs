//! Cursor hook payload → canonical events.

use arbiter_adapter_kit::{
    Classified, actions, call_id, check_depth, check_event_name, check_len, clip, generic_tool, lifecycle, malformed,
    mcp_resource, optional_str, parse_body, path_event, requester, required_str, resolve_path, split_mcp_double,
    tool_name, urls_in,
};
use arbiter_sdk::{Action, DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Observation, Requester};
use serde_json::{Map, Value, json};

/// The service every requester is attributed to.
const SERVICE: &str = "cursor";

/// Fields common to every hook payload; the rest of a lifecycle payload is
/// its detail.
const BASE_FIELDS: &[&str] = &[
    "conversation_id",
    "session_id",
    "generation_id",
    "model",
    "hook_event_name",
    "cursor_version",
    "workspace_roots",
    "user_email",
    "transcript_path",
];

/// Vendor facts copied into `requester.attributes-json` when present.
const ATTRIBUTE_FIELDS: &[&str] =
    &["generation_id", "model", "cursor_version", "workspace_roots", "transcript_path", "cwd"];

/// Longest `user_email` accepted as the human's identity.
const MAX_EMAIL_LEN: usize = 256;

/// Cursor names no tool in its dedicated shell, file-read and file-edit
/// events; these are the names the adapter records for them.
pub(crate) const SHELL_TOOL: &str = "shell";
pub(crate) const READ_TOOL: &str = "read_file";
pub(crate) const EDIT_TOOL: &str = "edit_file";

/// Decodes one Cursor hook request.
pub(crate) fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    let body = parse_body(req)?;
    let event_kind = required_str(&body, "hook_event_name")?;
    check_event_name("`hook_event_name`", event_kind)?;
    if let Some(routed) = path_event(req)?
        && routed != event_kind
    {
        return Err(malformed(format!("the URL names event `{routed}` but the body is a `{event_kind}`")));
    }
    let requester = requester_of(&body, event_kind)?;
    let events = match event_kind {
        "beforeSubmitPrompt" => vec![Event::Intent(Intent {
            text: required_str(&body, "prompt")?.to_owned(),
            event_kind: event_kind.to_owned(),
        })],
        "beforeShellExecution" => vec![Event::Action(shell_action(&body, event_kind)?)],
        "beforeMCPExecution" => mcp_actions(&body, event_kind)?.into_iter().map(Event::Action).collect(),
        "beforeReadFile" | "beforeTabFileRead" => {
            read_actions(&body, event_kind)?.into_iter().map(Event::Action).collect()
        }
        "preToolUse" => tool_actions(&body, event_kind)?.into_iter().map(Event::Action).collect(),
        "afterShellExecution"
        | "afterMCPExecution"
        | "afterFileEdit"
        | "afterTabFileEdit"
        | "postToolUse"
        | "postToolUseFailure" => vec![Event::Observation(observation(&body, event_kind)?)],
        "sessionStart" => vec![Event::SessionStart(lifecycle(&body, BASE_FIELDS, event_kind))],
        "sessionEnd" => vec![Event::SessionEnd(lifecycle(&body, BASE_FIELDS, event_kind))],
        _ => vec![Event::Other(summarised_lifecycle(&body, event_kind))],
    };
    Ok(Decoded { requester, events })
}

/// The requester: the session is `conversation_id` (stable across turns),
/// else `session_id`; the human is `user_email` when Cursor sends one.
fn requester_of(body: &Map<String, Value>, event_kind: &str) -> Result<Requester, DecodeError> {
    let session = match optional_str(body, "conversation_id")? {
        Some(id) => id,
        None => optional_str(body, "session_id")?.ok_or_else(|| malformed("missing `conversation_id`"))?,
    };
    // Checked here so every event refuses a mistyped `cwd` or `workspace_roots`.
    base_dir(body)?;
    let mut attributes: Map<String, Value> =
        ATTRIBUTE_FIELDS.iter().filter_map(|k| body.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
    if event_kind.contains("MCP") {
        // Which server the call goes to, when the tool name does not say.
        let server: Map<String, Value> =
            ["url", "command"].iter().filter_map(|k| body.get(*k).map(|v| ((*k).to_owned(), v.clone()))).collect();
        if !server.is_empty() {
            attributes.insert("mcp_server".to_owned(), Value::Object(server));
        }
    }
    let mut r = requester(session, SERVICE, None, attributes)?;
    if let Some(email) = optional_str(body, "user_email")?.map(str::trim).filter(|e| !e.is_empty()) {
        check_len("user_email", email, MAX_EMAIL_LEN)?;
        r.human = Some(email.to_owned());
    }
    Ok(r)
}

/// The directory relative paths resolve against: `cwd`, else the first
/// workspace root.
fn base_dir(body: &Map<String, Value>) -> Result<Option<&str>, DecodeError> {
    if let Some(cwd) = optional_str(body, "cwd")? {
        return Ok(Some(cwd));
    }
    Ok(match body.get("workspace_roots") {
        Some(Value::Array(roots)) => roots.first().and_then(Value::as_str),
        Some(Value::Null) | None => None,
        Some(_) => return Err(malformed("`workspace_roots` is not an array")),
    })
}

fn shell_action(body: &Map<String, Value>, event_kind: &str) -> Result<Action, DecodeError> {
    let command = required_str(body, "command")?;
    let mut input = Map::new();
    input.insert("command".to_owned(), Value::String(command.to_owned()));
    let mut actions = actions(Classified::new("shell", "exec", None), &input, SHELL_TOOL, event_kind, None)?;
    actions.pop().ok_or_else(|| malformed("no action decoded"))
}

fn mcp_actions(body: &Map<String, Value>, event_kind: &str) -> Result<Vec<Action>, DecodeError> {
    let name = tool_name(body, "tool_name")?;
    let input = tool_input(body, true)?;
    actions(mcp_classified(name)?, &input, name, event_kind, call_id(body, "tool_use_id")?)
}

/// A file read: the path is the target. Cursor sends the file's content
/// along; it is not copied into the action (and so not into the receipt),
/// only its size is.
fn read_actions(body: &Map<String, Value>, event_kind: &str) -> Result<Vec<Action>, DecodeError> {
    let path = required_str(body, "file_path")?;
    if path.is_empty() {
        return Err(malformed("`file_path` is empty"));
    }
    let content = optional_str(body, "content")?;
    let mut input = Map::new();
    input.insert("file_path".to_owned(), Value::String(path.to_owned()));
    if let Some(content) = content {
        input.insert("content_bytes".to_owned(), Value::from(content.len()));
    }
    match body.get("attachments") {
        Some(a @ Value::Array(_)) => {
            check_depth("attachments", Some(a))?;
            input.insert("attachments".to_owned(), a.clone());
        }
        Some(Value::Null) | None => {}
        Some(_) => return Err(malformed("`attachments` is not an array")),
    }
    let target = resolve_path(base_dir(body)?, path);
    actions(Classified::new("file", "read", Some(target)), &input, READ_TOOL, event_kind, None)
}

fn tool_actions(body: &Map<String, Value>, event_kind: &str) -> Result<Vec<Action>, DecodeError> {
    let name = tool_name(body, "tool_name")?;
    let input = tool_input(body, true)?;
    let classified = classify(name, &input, base_dir(body)?)?;
    actions(classified, &input, name, event_kind, call_id(body, "tool_use_id")?)
}

/// `tool_input` as an object. Sources disagree on its shape (a JSON string
/// in one, an object in another), so both are accepted; an empty string is
/// no arguments.
///
/// # Errors
/// Malformed when it is missing (and `required`), not an object or a
/// string holding one, or nested too deep.
fn tool_input(body: &Map<String, Value>, required: bool) -> Result<Map<String, Value>, DecodeError> {
    let input = match body.get("tool_input") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => Map::new(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(malformed("`tool_input` is a string that does not hold a JSON object")),
            Err(e) => return Err(malformed(format!("`tool_input` is a string that is not valid JSON: {e}"))),
        },
        Some(Value::Null) | None if !required => Map::new(),
        None => return Err(malformed("missing `tool_input`")),
        Some(_) => return Err(malformed("`tool_input` is neither a JSON object nor a JSON string")),
    };
    let value = Value::Object(input);
    check_depth("tool_input", Some(&value))?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// An MCP tool's classification. Cursor names MCP tools `MCP:<server>:<tool>`
/// in one source and plainly in another; `mcp__<server>__<tool>` is accepted
/// too. A plain name has no server, so the action has no resource (the
/// server's `url` or `command` is in the requester's `mcp_server`).
fn mcp_classified(name: &str) -> Result<Classified, DecodeError> {
    Ok(match mcp_parts(name) {
        Some((server, tool)) => Classified::new("mcp", "call", Some(mcp_resource(server, tool))),
        None if name.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("mcp:")) => {
            return Err(malformed(format!("MCP tool name `{}` has no tool after the server", clip(name))));
        }
        None => Classified::new("mcp", "call", None),
    })
}

/// (server, tool) of `MCP:<server>:<tool>` or `mcp__<server>__<tool>`.
fn mcp_parts(name: &str) -> Option<(&str, &str)> {
    if let Some(rest) = name.get(..4).filter(|p| p.eq_ignore_ascii_case("mcp:")).and_then(|_| name.get(4..)) {
        let (server, tool) = rest.split_once(':')?;
        return (!server.is_empty() && !tool.is_empty()).then_some((server, tool));
    }
    split_mcp_double(name)
}

/// Canonical tool, operation and targets of a `preToolUse` call. Cursor's
/// generic tool names are not documented with their inputs, so both the
/// agent's tool names and Claude-style names are recognised, case-blind;
/// any other tool is classified by its own name.
pub(crate) fn classify(name: &str, input: &Map<String, Value>, cwd: Option<&str>) -> Result<Classified, DecodeError> {
    let text = |keys: &[&str]| keys.iter().find_map(|k| input.get(*k).and_then(Value::as_str));
    let path = |keys: &[&str]| text(keys).map(|p| resolve_path(cwd, p));
    let lower = name.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "shell" | "bash" | "terminal" | "run_terminal_cmd" | "run_terminal_command" => {
            Classified::new("shell", "exec", None)
        }
        "read" | "read_file" | "readfile" => {
            Classified::new("file", "read", path(&["file_path", "path", "target_file"]))
        }
        "write" | "edit" | "multiedit" | "strreplace" | "delete" | "edit_file" | "search_replace" | "write_file"
        | "delete_file" | "notebookedit" => {
            Classified::new("file", "write", path(&["file_path", "path", "target_file", "notebook_path"]))
        }
        "grep" | "glob" | "ls" | "list_dir" | "grep_search" | "file_search" | "codebase_search" => {
            Classified::new("file", "read", path(&["path", "dir_path", "target_directory", "directory"]))
        }
        "webfetch" | "web_fetch" | "fetch" => Classified {
            tool: "network".to_owned(),
            operation: "egress",
            resources: match text(&["url"]) {
                Some(url) => vec![url.to_owned()],
                None => text(&["prompt"]).map(urls_in).unwrap_or_default(),
            },
        },
        "websearch" | "web_search" => Classified::new("network", "egress", None),
        _ if lower.starts_with("mcp:") || lower.starts_with("mcp__") => mcp_classified(name)?,
        _ => Classified::new(generic_tool(name)?, "call", None),
    })
}

/// What a tool returned (or how it failed), for the session context. The
/// host keeps the output's digest, size and data classes, not the output.
fn observation(body: &Map<String, Value>, event_kind: &str) -> Result<Observation, DecodeError> {
    let cwd = base_dir(body)?;
    let (name, classified, output, call) = match event_kind {
        "afterShellExecution" => (
            SHELL_TOOL,
            Classified::new("shell", "exec", None),
            body.get("output").cloned().unwrap_or(Value::Null),
            None,
        ),
        "afterMCPExecution" => {
            let name = tool_name(body, "tool_name")?;
            (name, mcp_classified(name)?, json_or_text(body.get("result_json")), call_id(body, "tool_use_id")?)
        }
        "afterFileEdit" | "afterTabFileEdit" => {
            let path = required_str(body, "file_path")?;
            let mut edit = Map::new();
            edit.insert("file_path".to_owned(), Value::String(path.to_owned()));
            edit.insert("edits".to_owned(), body.get("edits").cloned().unwrap_or(Value::Null));
            let target = resolve_path(cwd, path);
            (EDIT_TOOL, Classified::new("file", "write", Some(target)), Value::Object(edit), None)
        }
        // postToolUse / postToolUseFailure: the input only classifies the
        // tool here; an unreadable one is not an error.
        _ => {
            let name = tool_name(body, "tool_name")?;
            let input = tool_input(body, false).unwrap_or_default();
            let output = if event_kind == "postToolUse" {
                json_or_text(body.get("tool_output").or_else(|| body.get("tool_response")))
            } else {
                failure(body)
            };
            (name, classify(name, &input, cwd)?, output, call_id(body, "tool_use_id")?)
        }
    };
    check_depth("tool output", Some(&output))?;
    Ok(Observation {
        original_tool: name.to_owned(),
        tool: classified.tool,
        operation: classified.operation.to_owned(),
        output_json: output.to_string(),
        event_kind: event_kind.to_owned(),
        call_id: call.map(str::to_owned),
    })
}

/// `value` parsed when it is a string holding JSON (`result_json` and
/// `tool_output` are JSON strings in the documentation), else unchanged.
fn json_or_text(value: Option<&Value>) -> Value {
    match value {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

/// A failed tool call's error: every field of the payload that is not the
/// call itself (`error_message`, `failure_type`...).
fn failure(body: &Map<String, Value>) -> Value {
    const CALL: &[&str] = &["tool_name", "tool_input", "tool_use_id", "cwd"];
    Value::Object(
        body.iter()
            .filter(|(k, _)| !BASE_FIELDS.contains(&k.as_str()) && !CALL.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// A lifecycle event whose agent text is summarised: the response and the
/// model's thinking are in the transcript, and copying them into the session
/// log would bloat it (and keep what the agent thought, verbatim).
fn summarised_lifecycle(body: &Map<String, Value>, event_kind: &str) -> Lifecycle {
    let mut trimmed = body.clone();
    if let Some(text) = trimmed.get_mut("text") {
        let chars = text.as_str().map_or(0, |t| t.chars().count());
        *text = json!({ "chars": chars });
    }
    lifecycle(&trimmed, BASE_FIELDS, event_kind)
}
