//! The adapter against the gateway's request fixtures, plus malformed input.

use std::path::{Path, PathBuf};

use arbiter_sdk::testing::{self, JsonReply};
use arbiter_sdk::{Action, Adapter, Decision, DecodeError, Decoded, Event, Observation, Verdict};
use serde_json::{Value, json};

use crate::{BLOCKING_REPLY, MAX_JSON_DEPTH, McpGateway, PLUGIN_NAME};

const SESSION: &str = "0198c2a1-5b7e-7c3d-9f00-6a1b2c3d4e5f";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mcp-gateway/0.1")
}

fn decode_value(body: &Value) -> Result<Decoded, DecodeError> {
    McpGateway::decode(&testing::json_request(body.to_string()))
}

fn malformed_message(body: &Value) -> String {
    match decode_value(body) {
        Err(DecodeError::Malformed(m)) => m,
        other => panic!("expected malformed, got {other:?}"),
    }
}

fn call(tool: &str, arguments: Value) -> Value {
    json!({"event": "call", "session": SESSION, "server": "fs", "tool": tool, "arguments": arguments, "call_id": "1"})
}

fn encode(v: &Verdict) -> JsonReply {
    let req = testing::json_request(call("write_file", json!({"path": "/a"})).to_string());
    testing::encode_json::<McpGateway>(&req, v).unwrap()
}

#[test]
// A call decodes to one `mcp.call` action on `mcp://fs/<tool>`, named
// `mcp__fs__<tool>` so a pack's `[mcp_tools]` applies.
fn call_fixture_is_one_mcp_action() {
    let decoded = testing::decode_fixture::<McpGateway>(fixtures().join("call.json")).unwrap();
    assert_eq!(decoded.requester.session, SESSION);
    assert_eq!(decoded.requester.service.as_deref(), Some(PLUGIN_NAME));
    let attributes: Value = serde_json::from_str(&decoded.requester.attributes_json).unwrap();
    assert_eq!(attributes["mcp_server"], "fs");
    assert_eq!(
        decoded.events,
        vec![Event::Action(Action {
            tool: "mcp".into(),
            operation: "call".into(),
            parameters_json: json!({"path": "/srv/data/notes.txt", "content": "hello"}).to_string(),
            resource: Some("mcp://fs/write_file".into()),
            original_tool: "mcp__fs__write_file".into(),
            event_kind: "call".into(),
            call_id: Some("3".into()),
        })]
    );
}

#[test]
// A result decodes to an observation of tool `mcp` carrying the output.
fn result_fixture_is_an_observation() {
    let decoded = testing::decode_fixture::<McpGateway>(fixtures().join("result.json")).unwrap();
    assert_eq!(
        decoded.events,
        vec![Event::Observation(Observation {
            original_tool: "mcp__fs__read_text_file".into(),
            tool: "mcp".into(),
            operation: "call".into(),
            output_json:
                json!({"content": [{"type": "text", "text": "hello"}], "structuredContent": {"content": "hello"}})
                    .to_string(),
            event_kind: "result".into(),
            call_id: Some("4".into()),
        })]
    );
    // An error result says so in the recorded output.
    let mut body: Value = serde_json::from_slice(&std::fs::read(fixtures().join("result.json")).unwrap()).unwrap();
    body["is_error"] = json!(true);
    let decoded = decode_value(&body).unwrap();
    let Event::Observation(o) = &decoded.events[0] else { panic!("{decoded:?}") };
    let output: Value = serde_json::from_str(&o.output_json).unwrap();
    assert_eq!(output["is_error"], true);
    assert_eq!(output["output"]["content"][0]["text"], "hello");
}

#[test]
// Missing arguments are an empty object; non-object arguments are refused.
fn arguments_must_be_an_object() {
    let mut body = call("list_allowed_directories", Value::Null);
    let decoded = decode_value(&body).unwrap();
    let Event::Action(a) = &decoded.events[0] else { panic!("{decoded:?}") };
    assert_eq!(a.parameters_json, "{}");
    body["arguments"] = json!([1, 2]);
    assert!(malformed_message(&body).contains("arguments"));
}

#[test]
// Bad input is a typed decode error naming the field.
fn malformed_input_is_refused() {
    assert!(matches!(McpGateway::decode(&testing::json_request("not json")), Err(DecodeError::Malformed(_))));
    assert!(matches!(McpGateway::decode(&testing::json_request("[]")), Err(DecodeError::Malformed(_))));
    let mut body = call("t", json!({}));
    body["event"] = json!("bogus");
    assert!(malformed_message(&body).contains("bogus"));
    for (field, value) in [
        ("server", json!("")),
        ("server", json!("a__b")),
        ("server", json!("a/b")),
        ("server", json!("x".repeat(65))),
        ("tool", json!("")),
        ("session", json!("")),
        ("session", json!("s".repeat(257))),
        ("call_id", json!("c".repeat(257))),
        ("session", json!(7)),
    ] {
        let mut body = call("t", json!({}));
        body[field] = value;
        let message = malformed_message(&body);
        assert!(!message.is_empty(), "{field}");
    }
    for missing in ["event", "session", "server", "tool"] {
        let mut body = call("t", json!({}));
        body.as_object_mut().unwrap().remove(missing);
        assert!(malformed_message(&body).contains(missing), "{missing}");
    }
    let mut result = call("t", json!({}));
    result["event"] = json!("result");
    result["is_error"] = json!("yes");
    assert!(malformed_message(&result).contains("is_error"));
}

#[test]
// Hostile nesting in arguments or output is refused, not walked.
fn deep_json_is_refused() {
    let mut deep = json!(1);
    for _ in 0..=MAX_JSON_DEPTH + 1 {
        deep = json!({"a": deep});
    }
    assert!(decode_value(&call("t", json!({"x": deep.clone()}))).is_err());
    let mut result = call("t", json!({}));
    result["event"] = json!("result");
    result["output"] = deep;
    assert!(decode_value(&result).is_err());
}

#[test]
// Oversized bodies are refused before parsing; the setting raises the limit.
fn body_limit_applies() {
    let big = call("t", json!({"content": "x".repeat(crate::DEFAULT_MAX_BODY_BYTES)}));
    assert!(malformed_message(&big).contains("limit"));
    testing::set_setting("max_body_bytes", (4 * crate::DEFAULT_MAX_BODY_BYTES).to_string());
    assert!(decode_value(&big).is_ok());
    testing::clear_settings();
}

#[test]
// Every decision has its reply; MODIFY carries the complete rewritten arguments.
fn encode_every_decision() {
    let mut allow = testing::verdict(Decision::Allow, "ok");
    allow.receipt_id = Some("r1".into());
    let reply = encode(&allow);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["decision"], "allow");
    assert_eq!(reply.body["receipt_id"], "r1");
    let deny = encode(&testing::verdict(Decision::Deny, "denied by policy: no"));
    assert_eq!(deny.body["decision"], "deny");
    assert!(deny.body["reason"].as_str().unwrap().contains("denied by policy: no"));
    assert_eq!(encode(&testing::verdict(Decision::StepUp, "ask")).body["decision"], "step_up");
    assert_eq!(encode(&testing::verdict(Decision::Defer, "later")).body["decision"], "defer");
    let mut modify = testing::verdict(Decision::Modify, "redacted");
    modify.modified_parameters_json = Some(json!({"path": "/safe"}).to_string());
    let reply = encode(&modify);
    assert_eq!(reply.body["decision"], "modify");
    assert_eq!(reply.body["arguments"], json!({"path": "/safe"}));
    // A MODIFY without usable parameters must not run the original call.
    let mut broken = testing::verdict(Decision::Modify, "x");
    broken.modified_parameters_json = Some("[1]".into());
    assert_eq!(encode(&broken).body["decision"], "deny");
    let mut fault = testing::verdict(Decision::Deny, "plugin trapped");
    fault.fault = true;
    assert_eq!(encode(&fault).body["fault"], true);
}

#[test]
// The plugin describes itself, and its blocking reply is a deny the gateway reads.
fn describe_and_blocking_reply() {
    let info = McpGateway::describe();
    assert_eq!(info.name, PLUGIN_NAME);
    assert_eq!(info.events, vec!["call".to_owned(), "result".to_owned()]);
    let reply: Value = serde_json::from_str(&BLOCKING_REPLY.replace("{{reason}}", "x")).unwrap();
    assert_eq!(reply["decision"], "deny");
    let body: Value = serde_json::from_slice(&info.blocking_reply.body).unwrap();
    assert_eq!(body["decision"], "deny");
}
