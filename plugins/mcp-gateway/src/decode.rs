//! Gateway request → canonical event.

use arbiter_adapter_kit::{
    Classified, actions, call_id, check_depth, check_len, clip, malformed, mcp_resource, object_field, parse_body,
    requester, required_str, tool_name,
};
use arbiter_sdk::{DecodeError, Decoded, Event, HttpRequest, Observation};
use serde_json::{Map, Value};

/// Longest MCP server name accepted.
pub const MAX_SERVER_LEN: usize = 64;

/// The service every requester is attributed to.
const SERVICE: &str = "mcp-gateway";

/// Decodes one gateway request.
pub(crate) fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
    let body = parse_body(req)?;
    let event = required_str(&body, "event")?;
    let session = required_str(&body, "session")?;
    let server = server_name(&body)?;
    let tool = tool_name(&body, "tool")?;
    let original_tool = format!("mcp__{server}__{tool}");
    let id = call_id(&body, "call_id")?;
    let mut attributes = Map::new();
    attributes.insert("mcp_server".to_owned(), Value::String(server.to_owned()));
    if let Some(client) = body.get("client") {
        check_depth("client", Some(client))?;
        attributes.insert("mcp_client".to_owned(), client.clone());
    }
    let requester = requester(session, SERVICE, None, attributes)?;
    let events = match event {
        "call" => {
            let empty = Map::new();
            let arguments = match body.get("arguments") {
                None | Some(Value::Null) => &empty,
                Some(_) => object_field(&body, "arguments")?,
            };
            let classified = Classified::new("mcp", "call", Some(mcp_resource(server, tool)));
            actions(classified, arguments, &original_tool, event, id)?.into_iter().map(Event::Action).collect()
        }
        "result" => {
            let output = body.get("output").unwrap_or(&Value::Null);
            check_depth("output", Some(output))?;
            let output = match body.get("is_error") {
                Some(Value::Bool(true)) => {
                    let mut wrapped = Map::new();
                    wrapped.insert("is_error".to_owned(), Value::Bool(true));
                    wrapped.insert("output".to_owned(), output.clone());
                    Value::Object(wrapped)
                }
                None | Some(Value::Bool(false) | Value::Null) => output.clone(),
                Some(_) => return Err(malformed("`is_error` is not a boolean")),
            };
            check_len("tool name", &original_tool, 256)?;
            vec![Event::Observation(Observation {
                original_tool,
                tool: "mcp".to_owned(),
                operation: "call".to_owned(),
                output_json: output.to_string(),
                event_kind: event.to_owned(),
                call_id: id.map(str::to_owned),
            })]
        }
        other => return Err(malformed(format!("`event` `{}` is neither `call` nor `result`", clip(other)))),
    };
    Ok(Decoded { requester, events })
}

/// `server`: 1-64 letters, digits, `-` or `_`, without `__` (the separator
/// of `mcp__<server>__<tool>`), so the resource and tool name are unambiguous.
fn server_name(body: &Map<String, Value>) -> Result<&str, DecodeError> {
    let server = required_str(body, "server")?;
    if server.is_empty()
        || server.len() > MAX_SERVER_LEN
        || !server.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || server.contains("__")
    {
        return Err(malformed(format!(
            "`server` `{}` is not a server name (1-{MAX_SERVER_LEN} letters, digits, `-` or `_`, no `__`)",
            clip(server)
        )));
    }
    Ok(server)
}
