//! The adapter against every real Claude Code fixture, plus malformed input.

use std::path::{Path, PathBuf};

use arbiter_sdk::testing::{self, JsonReply};
use arbiter_sdk::{
    Action, Adapter, Decision, DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Observation, Verdict,
};
use serde_json::{Value, json};

use crate::{BLOCKING_REPLY, ClaudeCode, MAX_JSON_DEPTH};

fn fixtures(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/claude-code").join(version)
}

fn fixture(version: &str, name: &str) -> PathBuf {
    fixtures(version).join(name)
}

fn request(version: &str, name: &str) -> HttpRequest {
    testing::fixture_request(fixture(version, name)).unwrap()
}

fn fixture_json(version: &str, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(version, name)).unwrap()).unwrap()
}

fn decode_value(body: &Value) -> Result<Decoded, DecodeError> {
    ClaudeCode::decode(&testing::json_request(body.to_string()))
}

fn malformed_message(body: &Value) -> String {
    match decode_value(body) {
        Err(DecodeError::Malformed(m)) => m,
        other => panic!("expected malformed, got {other:?}"),
    }
}

fn only_event(decoded: &Decoded) -> &Event {
    assert_eq!(decoded.events.len(), 1, "{decoded:?}");
    &decoded.events[0]
}

fn only_action(decoded: &Decoded) -> &Action {
    match only_event(decoded) {
        Event::Action(a) => a,
        other => panic!("expected an action, got {other:?}"),
    }
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

const S_BASH: &str = "1f1d3d5f-e2c5-4c9e-aca7-cc8c3ee93249";
const NOTES: &str = "/home/dev/work/proj/notes.txt";

/// The canonical event each 2.1.330 fixture must decode to, or `Err` with
/// the text of the malformed error it must be refused with.
fn expected_2_1_330(name: &str) -> Result<Event, &'static str> {
    let write_input = json!({"file_path": NOTES, "content": "hello\n"}).to_string();
    let bash_input = json!({"command": "echo hello-from-mock", "description": "print greeting"}).to_string();
    Ok(match name {
        "PreToolUse.json" => Event::Action(Action {
            tool: "shell".into(),
            operation: "exec".into(),
            parameters_json: bash_input,
            resource: None,
            original_tool: "Bash".into(),
            event_kind: "PreToolUse".into(),
            call_id: Some("toolu_bb506a591cfc4301b15633d8".into()),
        }),
        "PreToolUse-Write.json" => Event::Action(Action {
            tool: "file".into(),
            operation: "write".into(),
            parameters_json: write_input,
            resource: Some(NOTES.into()),
            original_tool: "Write".into(),
            event_kind: "PreToolUse".into(),
            call_id: Some("toolu_c1450fe37ad847258e798e6e".into()),
        }),
        "PermissionRequest.json" => Event::Action(Action {
            tool: "file".into(),
            operation: "write".into(),
            parameters_json: write_input,
            resource: Some(NOTES.into()),
            original_tool: "Write".into(),
            event_kind: "PermissionRequest".into(),
            call_id: None,
        }),
        "PostToolUse.json" => Event::Observation(Observation {
            original_tool: "Bash".into(),
            tool: "shell".into(),
            operation: "exec".into(),
            output_json: json!({"stdout": "hello-from-mock", "stderr": "", "interrupted": false,
                "isImage": false, "noOutputExpected": false})
            .to_string(),
            event_kind: "PostToolUse".into(),
            call_id: Some("toolu_bb506a591cfc4301b15633d8".into()),
        }),
        "PostToolUse-Write.json" => Event::Observation(Observation {
            original_tool: "Write".into(),
            tool: "file".into(),
            operation: "write".into(),
            output_json: json!({"type": "create", "filePath": NOTES, "content": "hello\n",
                "structuredPatch": [], "originalFile": null, "userModified": false})
            .to_string(),
            event_kind: "PostToolUse".into(),
            call_id: Some("toolu_c1450fe37ad847258e798e6e".into()),
        }),
        "UserPromptSubmit.json" => {
            Event::Intent(Intent { text: "run the greeting".into(), event_kind: "UserPromptSubmit".into() })
        }
        "SessionEnd.json" => Event::SessionEnd(Lifecycle {
            event_kind: "SessionEnd".into(),
            detail_json: json!({"reason": "other"}).to_string(),
        }),
        "Stop.json" => Event::Other(Lifecycle {
            event_kind: "Stop".into(),
            detail_json: json!({"stop_hook_active": false, "last_assistant_message": "done",
                "background_tasks": [], "session_crons": []})
            .to_string(),
        }),
        // Not a hook body: the headers Claude Code sent with one.
        "http-hook-request-headers.json" => return Err("missing `hook_event_name`"),
        other => panic!("fixture {other} has no expectation: add one"),
    })
}

// Every 2.1.330 fixture decodes to exactly the expected canonical event.
#[test]
fn every_2_1_330_fixture_maps_exactly() {
    let paths = testing::fixture_paths(fixtures("2.1.330")).unwrap();
    assert!(paths.len() >= 9, "fixtures missing: {paths:?}");
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        let result = ClaudeCode::decode(&testing::fixture_request(&path).unwrap());
        match expected_2_1_330(name) {
            Ok(event) => {
                let decoded = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(decoded.events, vec![event], "{name}");
                let body = fixture_json("2.1.330", name);
                assert_eq!(decoded.requester.session, body["session_id"].as_str().unwrap(), "{name}");
                assert_eq!(decoded.requester.agent.as_deref(), Some("claude-code"), "{name}");
                assert_eq!(decoded.requester.service.as_deref(), Some("claude-code"), "{name}");
                assert!(decoded.requester.delegation_chain.is_empty(), "{name}");
            }
            Err(needle) => match result {
                Err(DecodeError::Malformed(m)) => assert!(m.contains(needle), "{name}: {m}"),
                other => panic!("{name}: expected malformed, got {other:?}"),
            },
        }
    }
}

// The requester carries exactly the vendor facts present in the payload.
#[test]
fn requester_from_pre_tool_use() {
    let decoded = testing::decode_fixture::<ClaudeCode>(fixture("2.1.330", "PreToolUse.json")).unwrap();
    let r = &decoded.requester;
    assert_eq!(r.session, S_BASH);
    assert_eq!(r.human, None);
    assert!(r.roles.is_empty() && r.scope.is_empty());
    assert_eq!(
        json_of(&r.attributes_json),
        json!({
            "cwd": "/home/dev/work/proj",
            "transcript_path": format!("/home/dev/work/home/.claude/projects/-home-dev-work-proj/{S_BASH}.jsonl"),
            "permission_mode": "default",
            "prompt_id": "ffa94e2d-59ff-40b1-bd95-470ba5ed4822",
            "effort": {"level": "medium"},
        })
    );
}

// The 2.1.197 SessionStart (sent to command hooks only) is a session start.
#[test]
fn session_start_2_1_197() {
    let decoded = testing::decode_fixture::<ClaudeCode>(fixture("2.1.197", "SessionStart.command-stdin.json")).unwrap();
    assert_eq!(
        only_event(&decoded),
        &Event::SessionStart(Lifecycle {
            event_kind: "SessionStart".into(),
            detail_json: json!({"source": "startup"}).to_string(),
        })
    );
    assert_eq!(decoded.requester.session, "4e487f89-37fd-495f-b6d7-728a58088e1d");
    assert_eq!(
        json_of(&decoded.requester.attributes_json),
        json!({"cwd": "/home/dev/work/proj",
               "transcript_path": "/home/dev/work/home/.claude/projects/-home-dev-work-proj/4e487f89-37fd-495f-b6d7-728a58088e1d.jsonl"})
    );
}

// The `human` setting names the human, `roles` the agent's roles; a subagent
// is the agent, delegated by claude-code.
#[test]
fn human_setting_and_subagent() {
    testing::set_setting("human", "alice@example.com");
    testing::set_setting("roles", " infra-owner, ,on-call ");
    let mut body = fixture_json("2.1.330", "PreToolUse.json");
    body["agent_id"] = json!("agent-7");
    body["agent_type"] = json!("general-purpose");
    body["mcp_server"] = json!({"name": "github", "source": "project"});
    let decoded = decode_value(&body).unwrap();
    let r = &decoded.requester;
    assert_eq!(r.human.as_deref(), Some("alice@example.com"));
    assert_eq!(r.roles, vec!["infra-owner".to_owned(), "on-call".to_owned()]);
    assert_eq!(r.agent.as_deref(), Some("agent-7"));
    assert_eq!(r.delegation_chain, vec!["claude-code".to_owned(), "agent-7".to_owned()]);
    let attrs = json_of(&r.attributes_json);
    assert_eq!(attrs["agent_type"], "general-purpose");
    assert_eq!(attrs["mcp_server"], json!({"name": "github", "source": "project"}));
    assert!(attrs.get("agent_id").is_none(), "agent_id is the agent, not an attribute");
}

fn pre_tool_use(tool_name: &str, tool_input: Value) -> Action {
    let mut body = fixture_json("2.1.330", "PreToolUse.json");
    body["tool_name"] = json!(tool_name);
    body["tool_input"] = tool_input;
    let decoded = decode_value(&body).unwrap();
    only_action(&decoded).clone()
}

// The mapping table from the brief, one row per tool.
#[test]
fn tool_mapping_table() {
    let cases: &[(&str, Value, &str, &str, Option<&str>)] = &[
        ("Bash", json!({"command": "ls"}), "shell", "exec", None),
        ("Write", json!({"file_path": "/a", "content": ""}), "file", "write", Some("/a")),
        ("Edit", json!({"file_path": "/b", "old_string": "x", "new_string": "y"}), "file", "write", Some("/b")),
        ("MultiEdit", json!({"file_path": "/c", "edits": []}), "file", "write", Some("/c")),
        ("NotebookEdit", json!({"notebook_path": "/n.ipynb", "new_source": ""}), "file", "write", Some("/n.ipynb")),
        ("Read", json!({"file_path": "/etc/hosts"}), "file", "read", Some("/etc/hosts")),
        ("Glob", json!({"pattern": "**/*.rs", "path": "/src"}), "file", "read", Some("/src")),
        ("Glob", json!({"pattern": "**/*.rs"}), "file", "read", Some("**/*.rs")),
        ("Grep", json!({"pattern": "TODO", "path": "/repo"}), "file", "read", Some("/repo")),
        (
            "WebFetch",
            json!({"url": "https://example.com/x", "prompt": "p"}),
            "network",
            "egress",
            Some("https://example.com/x"),
        ),
        ("WebSearch", json!({"query": "rust wasm"}), "network", "egress", None),
        ("mcp__github__create_issue", json!({"title": "t"}), "mcp", "call", Some("mcp://github/create_issue")),
        ("mcp__my_srv__do__thing", json!({}), "mcp", "call", Some("mcp://my_srv/do__thing")),
        ("TodoWrite", json!({"todos": []}), "todowrite", "call", None),
        ("Task", json!({"prompt": "p"}), "task", "call", None),
        ("My Tool.v2", json!({}), "my_tool_v2", "call", None),
        ("mcp__onlyserver", json!({}), "mcp__onlyserver", "call", None),
    ];
    for (name, input, tool, operation, resource) in cases {
        let a = pre_tool_use(name, input.clone());
        assert_eq!(a.tool, *tool, "{name}");
        assert_eq!(a.operation, *operation, "{name}");
        assert_eq!(a.resource.as_deref(), *resource, "{name}");
        assert_eq!(a.original_tool, *name);
        // Parameters are the vendor's tool_input, unchanged and in order.
        assert_eq!(a.parameters_json, input.to_string(), "{name}");
    }
}

// A generic tool name is cut to the schema's 64 characters and starts with a letter or digit.
#[test]
fn generic_tool_names_fit_the_schema() {
    let a = pre_tool_use(&format!("__{}", "X".repeat(100)), json!({}));
    assert_eq!(a.tool, "x".repeat(64));
    let err = malformed_message(&{
        let mut b = fixture_json("2.1.330", "PreToolUse.json");
        b["tool_name"] = json!("???");
        b
    });
    assert!(err.contains("`tool_name` `???`"), "{err}");
}

// PostToolUseFailure is an observation of the error.
#[test]
fn post_tool_use_failure_observes_the_error() {
    let mut body = fixture_json("2.1.330", "PostToolUse.json");
    body["hook_event_name"] = json!("PostToolUseFailure");
    body.as_object_mut().unwrap().remove("tool_response");
    body["error"] = json!("command not found");
    body["is_interrupt"] = json!(false);
    let decoded = decode_value(&body).unwrap();
    assert_eq!(
        only_event(&decoded),
        &Event::Observation(Observation {
            original_tool: "Bash".into(),
            tool: "shell".into(),
            operation: "exec".into(),
            output_json: json!({"error": "command not found", "is_interrupt": false}).to_string(),
            event_kind: "PostToolUseFailure".into(),
            call_id: Some("toolu_bb506a591cfc4301b15633d8".into()),
        })
    );
}

// Lifecycle events without a dedicated variant are `other`, details kept.
#[test]
fn other_lifecycle_events() {
    for (event, extra) in [
        ("SubagentStop", json!({"stop_hook_active": false})),
        ("Notification", json!({"message": "needs permission", "notification_type": "permission_prompt"})),
        ("PreCompact", json!({"trigger": "auto", "custom_instructions": null})),
        ("SomeFutureEvent", json!({})),
    ] {
        let mut body = json!({"session_id": "s", "hook_event_name": event, "cwd": "/x"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let decoded = decode_value(&body).unwrap();
        assert_eq!(
            only_event(&decoded),
            &Event::Other(Lifecycle { event_kind: event.into(), detail_json: extra.to_string() })
        );
    }
}

// Malformed bodies are refused with a message that names the problem.
#[test]
fn malformed_inputs() {
    let pre = fixture_json("2.1.330", "PreToolUse.json");
    let without = |key: &str| {
        let mut b = pre.clone();
        b.as_object_mut().unwrap().remove(key);
        b
    };
    let with = |key: &str, v: Value| {
        let mut b = pre.clone();
        b[key] = v;
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "body is not a JSON object"),
        (json!("PreToolUse"), "body is not a JSON object"),
        (without("hook_event_name"), "missing `hook_event_name`"),
        (with("hook_event_name", json!(7)), "`hook_event_name` is not a string"),
        (with("hook_event_name", json!("")), "is not an event name"),
        (with("hook_event_name", json!("Pre Tool")), "`Pre Tool` is not an event name"),
        (with("hook_event_name", json!("E".repeat(65))), "is not an event name"),
        (without("session_id"), "missing `session_id`"),
        (with("session_id", json!("")), "`session_id` is empty"),
        (with("session_id", json!(42)), "`session_id` is not a string"),
        (with("session_id", json!("s".repeat(257))), "`session_id` is 257 bytes"),
        (without("tool_name"), "missing `tool_name`"),
        (with("tool_name", json!("")), "`tool_name` is empty"),
        (with("tool_name", json!(["Bash"])), "`tool_name` is not a string"),
        (without("tool_input"), "missing `tool_input`"),
        (with("tool_input", json!("ls")), "`tool_input` is not a JSON object"),
        (with("tool_input", json!(null)), "`tool_input` is not a JSON object"),
        (with("tool_use_id", json!(1)), "`tool_use_id` is not a string"),
        (with("agent_id", json!({})), "`agent_id` is not a string"),
        (with("tool_input", json!({"file_path": "/".repeat(4097)})).tap_tool("Read"), "`resource` is 4097 bytes"),
        (json!({"session_id": "s", "hook_event_name": "UserPromptSubmit"}), "missing `prompt`"),
        (json!({"session_id": "s", "hook_event_name": "PermissionRequest", "tool_input": {}}), "missing `tool_name`"),
        (json!({"session_id": "s", "hook_event_name": "PostToolUse", "tool_response": {}}), "missing `tool_name`"),
    ];
    for (body, needle) in cases {
        let m = malformed_message(&body);
        assert!(m.contains(needle), "body {body}: `{m}` lacks `{needle}`");
    }
}

trait TapTool {
    fn tap_tool(self, name: &str) -> Value;
}

impl TapTool for Value {
    fn tap_tool(mut self, name: &str) -> Value {
        self["tool_name"] = json!(name);
        self
    }
}

// Bodies that are not JSON, or over the size limit, are malformed.
#[test]
fn non_json_and_oversized_bodies() {
    for body in [&b"not json"[..], b"", b"{\"session_id\": \"s\",", b"\xff\xfe"] {
        match ClaudeCode::decode(&testing::json_request(body)) {
            Err(DecodeError::Malformed(m)) => {
                assert!(m.starts_with("body is not valid JSON"), "{m}")
            }
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let prompt = "a".repeat(crate::DEFAULT_MAX_BODY_BYTES);
    let big = json!({"session_id": "s", "hook_event_name": "UserPromptSubmit", "prompt": prompt});
    let m = malformed_message(&big);
    assert!(m.contains("over the 1048576-byte limit"), "{m}");
    // The limit follows the `max_body_bytes` setting.
    testing::set_setting("max_body_bytes", "2097152");
    assert!(decode_value(&big).is_ok());
    testing::set_setting("max_body_bytes", "100");
    assert!(malformed_message(&fixture_json("2.1.330", "PreToolUse.json")).contains("over the 100-byte limit"));
}

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

// tool_input may nest 64 levels deep, not 65; the same holds for tool_response.
#[test]
fn nesting_is_bounded() {
    let a = pre_tool_use("Bash", nested(MAX_JSON_DEPTH));
    assert_eq!(a.parameters_json, nested(MAX_JSON_DEPTH).to_string());
    let mut body = fixture_json("2.1.330", "PreToolUse.json");
    body["tool_input"] = nested(MAX_JSON_DEPTH + 1);
    assert!(malformed_message(&body).contains("`tool_input` nests deeper than 64 levels"));
    let mut body = fixture_json("2.1.330", "PostToolUse.json");
    body["tool_response"] = json!([nested(MAX_JSON_DEPTH)]);
    assert!(malformed_message(&body).contains("`tool_response` nests deeper than 64 levels"));
}

// ---- encode ----

fn encode(req: &HttpRequest, v: &Verdict) -> Value {
    let JsonReply { status, content_type, body, .. } = testing::encode_json::<ClaudeCode>(req, v).unwrap();
    assert_eq!(status, 200, "Claude Code ignores non-200 replies");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    body
}

fn with_receipt(mut v: Verdict, id: &str) -> Verdict {
    v.receipt_id = Some(id.into());
    v
}

fn modify(params: Option<&str>) -> Verdict {
    let mut v = testing::verdict(Decision::Modify, "rewritten");
    v.modified_parameters_json = params.map(str::to_owned);
    v
}

fn pto(decision: &str, reason: &str) -> Value {
    json!({"hookSpecificOutput": {"hookEventName": "PreToolUse",
        "permissionDecision": decision, "permissionDecisionReason": reason}})
}

// PreToolUse: each decision becomes the matching permissionDecision.
#[test]
fn pre_tool_use_replies() {
    let req = request("2.1.330", "PreToolUse.json");
    let v = testing::verdict;
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), pto("allow", "ok"));
    assert_eq!(encode(&req, &v(Decision::Deny, "rm -rf / is forbidden")), pto("deny", "rm -rf / is forbidden"));
    assert_eq!(encode(&req, &v(Decision::StepUp, "needs a human")), pto("ask", "needs a human"));
    assert_eq!(encode(&req, &v(Decision::Defer, "later")), pto("deny", "deferred: later"));
    assert_eq!(
        encode(&req, &with_receipt(v(Decision::Deny, "no"), "0190-abc")),
        pto("deny", "no [arbiter receipt 0190-abc]")
    );
    assert_eq!(
        encode(&req, &with_receipt(v(Decision::Defer, "later"), "r1")),
        pto("deny", "deferred: later [arbiter receipt r1]")
    );
    // A fault-forced deny is still a deny.
    let mut fault = v(Decision::Deny, "plugin fault: trap");
    fault.fault = true;
    assert_eq!(encode(&req, &fault), pto("deny", "plugin fault: trap"));
}

// PreToolUse MODIFY: allow with the full rewritten input; unusable parameters deny.
#[test]
fn pre_tool_use_modify() {
    let req = request("2.1.330", "PreToolUse.json");
    let params = r#"{"command":"echo safe","description":"print greeting"}"#;
    let body = encode(&req, &modify(Some(params)));
    assert_eq!(
        body,
        json!({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
            "permissionDecisionReason": "rewritten", "updatedInput": json_of(params)}})
    );
    for bad in [None, Some("not json"), Some("[1]"), Some("\"x\"")] {
        let body = encode(&req, &modify(bad));
        assert_eq!(body, pto("deny", "modify verdict without usable modified parameters: rewritten"), "{bad:?}");
    }
}

// PermissionRequest: allow stays neutral unless the integration opts in, modify
// allows with the rewritten input, deny/defer deny with a message, step-up stays neutral.
#[test]
fn permission_request_replies() {
    let req = request("2.1.330", "PermissionRequest.json");
    let v = testing::verdict;
    let pr =
        |decision: Value| json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}});
    testing::clear_settings();
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({}));
    testing::set_setting("approve_permission_requests", "true");
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), pr(json!({"behavior": "allow"})));
    testing::clear_settings();
    assert_eq!(
        encode(&req, &with_receipt(v(Decision::Deny, "no writes"), "r9")),
        pr(json!({"behavior": "deny", "message": "no writes [arbiter receipt r9]"}))
    );
    assert_eq!(
        encode(&req, &v(Decision::Defer, "later")),
        pr(json!({"behavior": "deny", "message": "deferred: later"}))
    );
    assert_eq!(encode(&req, &v(Decision::StepUp, "ask")), json!({}));
    let params = r#"{"file_path":"/tmp/notes.txt","content":"hello\n"}"#;
    assert_eq!(encode(&req, &modify(Some(params))), pr(json!({"behavior": "allow", "updatedInput": json_of(params)})));
    assert_eq!(
        encode(&req, &modify(Some("{"))),
        pr(json!({"behavior": "deny", "message": "modify verdict without usable modified parameters: rewritten"}))
    );
}

// PreToolUse: with `allow_reply = "neutral"` an allow leaves the decision to
// Claude Code's own permission settings; blocks are unchanged.
#[test]
fn neutral_allow_reply_keeps_console_prompts() {
    let req = request("2.1.330", "PreToolUse.json");
    testing::clear_settings();
    testing::set_setting("allow_reply", "neutral");
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
    let denied = encode(&req, &testing::verdict(Decision::Deny, "no"));
    assert_eq!(denied["hookSpecificOutput"]["permissionDecision"], json!("deny"));
    testing::clear_settings();
}

fn undecided(decision: Decision, reason: &str) -> Verdict {
    let mut v = testing::verdict(decision, reason);
    v.decided = false;
    v
}

// Non-decision events get `{}`; a deny on UserPromptSubmit blocks the prompt.
#[test]
fn non_decision_replies() {
    for name in ["UserPromptSubmit.json", "PostToolUse.json", "PostToolUse-Write.json", "SessionEnd.json", "Stop.json"]
    {
        let req = request("2.1.330", name);
        assert_eq!(encode(&req, &undecided(Decision::Allow, "ok")), json!({}), "{name}");
    }
    let prompt = request("2.1.330", "UserPromptSubmit.json");
    assert_eq!(
        encode(&prompt, &with_receipt(undecided(Decision::Deny, "prompt injection"), "r2")),
        json!({"decision": "block", "reason": "prompt injection [arbiter receipt r2]"})
    );
    assert_eq!(
        encode(&prompt, &undecided(Decision::Defer, "later")),
        json!({"decision": "block", "reason": "deferred: later"})
    );
    // On Stop a `block` would keep the agent working: a deny stays neutral.
    let stop = request("2.1.330", "Stop.json");
    assert_eq!(encode(&stop, &undecided(Decision::Deny, "no")), json!({}));
    let post = request("2.1.330", "PostToolUse.json");
    assert_eq!(encode(&post, &undecided(Decision::Deny, "no")), json!({}));
}

// A deny still blocks a tool call even if the host did not mark it decided.
#[test]
fn blocking_verdicts_block_tool_calls_regardless_of_decided() {
    let req = request("2.1.330", "PreToolUse.json");
    assert_eq!(encode(&req, &undecided(Decision::Deny, "no")), pto("deny", "no"));
    assert_eq!(encode(&req, &undecided(Decision::Allow, "ok")), json!({}));
}

// A body that no longer parses gets the blocking shape unless the verdict lets it pass.
#[test]
fn unreadable_request_replies() {
    let req = testing::json_request("not json");
    let blocked = encode(&req, &testing::verdict(Decision::Deny, "why"));
    assert_eq!(blocked, json_of(&BLOCKING_REPLY.replace("{{reason}}", "why")));
    assert_eq!(encode(&req, &modify(Some("{}")))["decision"], "block");
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
}

// describe: identity, decisions, events, and a blocking reply that blocks both hook shapes.
#[test]
fn describe_plugin() {
    let info = ClaudeCode::describe();
    assert_eq!(info.name, "claude-code");
    assert_eq!(info.vendor, "Claude Code");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.vendor_versions, vec!["2.1.x".to_owned()]);
    assert_eq!(info.decisions, vec![Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp]);
    for e in ["UserPromptSubmit", "PreToolUse", "PermissionRequest", "PostToolUse", "SessionEnd", "Stop"] {
        assert!(info.events.iter().any(|x| x == e), "{e}");
    }
    let reply = &info.blocking_reply;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({"decision": "block", "reason": "{{reason}}", "hookSpecificOutput": {
            "hookEventName": "PreToolUse", "permissionDecision": "deny",
            "permissionDecisionReason": "{{reason}}"}})
    );
}
