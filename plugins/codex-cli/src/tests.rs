//! The adapter against every real Codex CLI fixture, plus malformed input.

use std::path::{Path, PathBuf};

use arbiter_sdk::testing::{self, JsonReply};
use arbiter_sdk::{
    Action, Adapter, Decision, DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Observation, Verdict,
};
use serde_json::{Value, json};

use crate::{BLOCKING_REPLY, CodexCli, MAX_JSON_DEPTH, VENDOR_VERSIONS};

const V: &str = "0.169.0";
const SESSION: &str = "01a205d4-335b-77b3-bfeb-cb4fbd5c9c38";
const CWD: &str = "/home/dev/work/codex/proj";
const CALL: &str = "call_ce5b82a1";

fn fixtures(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/codex-cli").join(version)
}

fn request(name: &str) -> HttpRequest {
    testing::fixture_request(fixtures(V).join(name)).unwrap()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures(V).join(name)).unwrap()).unwrap()
}

fn decode_value(body: &Value) -> Result<Decoded, DecodeError> {
    CodexCli::decode(&testing::json_request(body.to_string()))
}

fn malformed_message(body: &Value) -> String {
    match decode_value(body) {
        Err(DecodeError::Malformed(m)) => m,
        other => panic!("expected malformed, got {other:?}"),
    }
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn transcript() -> String {
    format!("/home/dev/work/codex/home/.codex/sessions/2026/11/23/rollout-2026-11-23T00-35-22-{SESSION}.jsonl")
}

/// The canonical event each 0.169.0 fixture must decode to.
fn expected(name: &str) -> Event {
    match name {
        "UserPromptSubmit.json" => {
            Event::Intent(Intent { text: "run the greeting".into(), event_kind: "UserPromptSubmit".into() })
        }
        "PreToolUse.json" => Event::Action(Action {
            tool: "shell".into(),
            operation: "exec".into(),
            parameters_json: json!({"command": "echo hello-from-mock"}).to_string(),
            resource: None,
            original_tool: "Bash".into(),
            event_kind: "PreToolUse".into(),
            call_id: Some(CALL.into()),
        }),
        "PostToolUse.json" => Event::Observation(Observation {
            original_tool: "Bash".into(),
            tool: "shell".into(),
            operation: "exec".into(),
            output_json: json!("hello-from-mock\n").to_string(),
            event_kind: "PostToolUse".into(),
            call_id: Some(CALL.into()),
        }),
        "SessionStart.json" => Event::SessionStart(Lifecycle {
            event_kind: "SessionStart".into(),
            detail_json: json!({"source": "startup"}).to_string(),
        }),
        "Stop.json" => Event::Other(Lifecycle {
            event_kind: "Stop".into(),
            detail_json: json!({"stop_hook_active": false, "last_assistant_message": "done"}).to_string(),
        }),
        other => panic!("fixture {other} has no expectation: add one"),
    }
}

// Every fixture of every tested version decodes to exactly the expected event.
#[test]
fn every_fixture_maps_exactly() {
    assert_eq!(VENDOR_VERSIONS, &[V]);
    let paths = testing::fixture_paths(fixtures(V)).unwrap();
    assert_eq!(paths.len(), 5, "fixtures missing: {paths:?}");
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        let decoded = testing::decode_fixture::<CodexCli>(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded.events, vec![expected(name)], "{name}");
        assert_eq!(decoded.requester.session, SESSION, "{name}");
        assert_eq!(decoded.requester.agent.as_deref(), Some("codex-cli"), "{name}");
        assert_eq!(decoded.requester.service.as_deref(), Some("codex-cli"), "{name}");
        assert!(decoded.requester.delegation_chain.is_empty(), "{name}");
    }
}

// The requester carries exactly the vendor facts present, plus the integration's settings.
#[test]
fn requester_from_pre_tool_use() {
    testing::set_setting("human", "bob@example.com");
    testing::set_setting("roles", "infra-owner");
    let decoded = testing::decode_fixture::<CodexCli>(fixtures(V).join("PreToolUse.json")).unwrap();
    let r = &decoded.requester;
    assert_eq!(r.human.as_deref(), Some("bob@example.com"));
    assert_eq!(r.roles, vec!["infra-owner".to_owned()]);
    assert_eq!(
        json_of(&r.attributes_json),
        json!({"cwd": CWD, "transcript_path": transcript(), "permission_mode": "bypassPermissions",
               "model": "gpt-mock", "turn_id": "01a205d4-3373-7df2-827c-eff73ac72f0b"})
    );
}

// Inside a sub-agent the sub-agent is the agent, delegated by codex-cli.
#[test]
fn subagent_is_the_agent() {
    let mut body = fixture_json("PreToolUse.json");
    body["agent_id"] = json!("agent-3");
    body["agent_type"] = json!("worker");
    let r = decode_value(&body).unwrap().requester;
    assert_eq!(r.agent.as_deref(), Some("agent-3"));
    assert_eq!(r.delegation_chain, vec!["codex-cli".to_owned(), "agent-3".to_owned()]);
    assert_eq!(json_of(&r.attributes_json)["agent_type"], "worker");
}

fn pre_tool_use(name: &str, input: Value) -> Vec<Action> {
    let mut body = fixture_json("PreToolUse.json");
    body["tool_name"] = json!(name);
    body["tool_input"] = input;
    decode_value(&body)
        .unwrap()
        .events
        .into_iter()
        .map(|e| match e {
            Event::Action(a) => a,
            other => panic!("{name}: expected an action, got {other:?}"),
        })
        .collect()
}

// Codex tools map to canonical tools; apply_patch is one file.write per file it touches.
#[test]
fn tool_mapping() {
    let patch = "*** Begin Patch\n*** Update File: src/lib.rs\n@@\n-a\n+b\n*** Add File: /etc/cron.d/x\n+* * * * * root x\n\
                 *** Delete File: old.txt\n*** End Patch\n";
    let cases: &[(&str, Value, &str, &str, &[&str])] = &[
        ("Bash", json!({"command": "ls"}), "shell", "exec", &[]),
        ("shell", json!({"command": ["bash", "-lc", "ls"]}), "shell", "exec", &[]),
        ("exec_command", json!({"cmd": "ls"}), "shell", "exec", &[]),
        (
            "apply_patch",
            json!({ "command": patch }),
            "file",
            "write",
            &["/home/dev/work/codex/proj/src/lib.rs", "/etc/cron.d/x", "/home/dev/work/codex/proj/old.txt"],
        ),
        ("apply_patch", json!({"command": "garbage"}), "file", "write", &[]),
        ("view_image", json!({"path": "img/a.png"}), "file", "read", &["/home/dev/work/codex/proj/img/a.png"]),
        ("read_file", json!({"file_path": "/etc/shadow"}), "file", "read", &["/etc/shadow"]),
        ("list_dir", json!({"dir_path": "/var"}), "file", "read", &["/var"]),
        ("web_search", json!({"query": "q"}), "network", "egress", &[]),
        ("NetworkAccess", json!({"command": "curl example.com"}), "network", "egress", &[]),
        ("mcp__github__create_issue", json!({"title": "t"}), "mcp", "call", &["mcp://github/create_issue"]),
        ("update_plan", json!({"plan": []}), "update_plan", "call", &[]),
        ("spawn_agent", json!({}), "spawn_agent", "call", &[]),
        ("dynamic__ns__Tool", json!({}), "dynamic__ns__tool", "call", &[]),
    ];
    for (name, input, tool, operation, resources) in cases {
        let actions = pre_tool_use(name, input.clone());
        let got: Vec<Option<&str>> = actions.iter().map(|a| a.resource.as_deref()).collect();
        let want: Vec<Option<&str>> =
            if resources.is_empty() { vec![None] } else { resources.iter().map(|r| Some(*r)).collect() };
        assert_eq!(got, want, "{name}");
        for a in &actions {
            assert_eq!((a.tool.as_str(), a.operation.as_str()), (*tool, *operation), "{name}");
            assert_eq!(a.original_tool, *name);
            assert_eq!(a.parameters_json, input.to_string(), "{name}: parameters are the input unchanged");
            assert_eq!(a.call_id.as_deref(), Some(CALL), "{name}: every target keeps the call id");
        }
    }
}

// PermissionRequest is decided like PreToolUse.
#[test]
fn permission_request_is_an_action() {
    let mut body = fixture_json("PreToolUse.json");
    body["hook_event_name"] = json!("PermissionRequest");
    body.as_object_mut().unwrap().remove("tool_use_id");
    body["tool_input"] = json!({"command": "rm -rf build", "description": "clean"});
    let decoded = decode_value(&body).unwrap();
    let [Event::Action(a)] = decoded.events.as_slice() else { panic!("{decoded:?}") };
    assert_eq!((a.tool.as_str(), a.event_kind.as_str(), a.call_id.as_deref()), ("shell", "PermissionRequest", None));
}

// Lifecycle events without a dedicated variant are `other`, details kept.
#[test]
fn other_lifecycle_events() {
    for (event, extra) in [
        ("StopFailure", json!({"error": "rate limited"})),
        ("PreCompact", json!({"trigger": "auto"})),
        ("SubagentStop", json!({"last_assistant_message": "ok"})),
        ("SomeFutureEvent", json!({})),
    ] {
        let mut body = json!({"session_id": "s", "hook_event_name": event, "cwd": "/x", "turn_id": "t"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let decoded = decode_value(&body).unwrap();
        assert_eq!(
            decoded.events,
            vec![Event::Other(Lifecycle { event_kind: event.into(), detail_json: extra.to_string() })]
        );
    }
}

// Malformed bodies are refused with a message that names the problem.
#[test]
fn malformed_inputs() {
    let pre = fixture_json("PreToolUse.json");
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
    let many_files: String = (0..65).map(|i| format!("*** Add File: f{i}\n")).collect();
    let cases: Vec<(Value, &str)> = vec![
        (json!("PreToolUse"), "body is not a JSON object"),
        (without("hook_event_name"), "missing `hook_event_name`"),
        (with("hook_event_name", json!("")), "is not an event name"),
        (without("session_id"), "missing `session_id`"),
        (with("session_id", json!(42)), "`session_id` is not a string"),
        (with("agent_id", json!({})), "`agent_id` is not a string"),
        (with("agent_id", json!("a".repeat(257))), "`agent id` is 257 bytes"),
        (without("tool_name"), "missing `tool_name`"),
        (with("tool_name", json!(["Bash"])), "`tool_name` is not a string"),
        (without("tool_input"), "missing `tool_input`"),
        (with("tool_input", json!(null)), "`tool_input` is not a JSON object"),
        (with("tool_use_id", json!(1)), "`tool_use_id` is not a string"),
        (with("tool_use_id", json!("c".repeat(257))), "`tool_use_id` is 257 bytes"),
        (
            with("tool_input", json!({ "command": many_files })).tap("apply_patch"),
            "`apply_patch` acts on 65 targets, over the 64-target limit",
        ),
        (json!({"session_id": "s", "hook_event_name": "UserPromptSubmit"}), "missing `prompt`"),
        (json!({"session_id": "s", "hook_event_name": "PostToolUse", "tool_response": "x"}), "missing `tool_name`"),
    ];
    for (body, needle) in cases {
        let m = malformed_message(&body);
        assert!(m.contains(needle), "body {body}: `{m}` lacks `{needle}`");
    }
}

trait Tap {
    fn tap(self, tool: &str) -> Value;
}

impl Tap for Value {
    fn tap(mut self, tool: &str) -> Value {
        self["tool_name"] = json!(tool);
        self
    }
}

// Bodies that are not JSON, or over the size limit, are malformed.
#[test]
fn non_json_and_oversized_bodies() {
    for body in [&b"not json"[..], b"", b"{\"session_id\": \"s\",", b"\xff\xfe"] {
        match CodexCli::decode(&testing::json_request(body)) {
            Err(DecodeError::Malformed(m)) => assert!(m.starts_with("body is not valid JSON"), "{m}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let big = json!({"session_id": "s", "hook_event_name": "UserPromptSubmit",
                     "prompt": "a".repeat(crate::DEFAULT_MAX_BODY_BYTES)});
    assert!(malformed_message(&big).contains("over the 1048576-byte limit"));
    testing::set_setting("max_body_bytes", "not a number");
    assert!(malformed_message(&big).contains("over the 1048576-byte limit"));
    testing::set_setting("max_body_bytes", "2097152");
    assert!(decode_value(&big).is_ok());
}

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

// tool_input and tool_response may nest 64 levels deep, not 65.
#[test]
fn nesting_is_bounded() {
    assert_eq!(pre_tool_use("Bash", nested(MAX_JSON_DEPTH)).len(), 1);
    let mut body = fixture_json("PreToolUse.json");
    body["tool_input"] = nested(MAX_JSON_DEPTH + 1);
    assert!(malformed_message(&body).contains("`tool_input` nests deeper than 64 levels"));
    let mut body = fixture_json("PostToolUse.json");
    body["tool_response"] = json!([nested(MAX_JSON_DEPTH)]);
    assert!(malformed_message(&body).contains("`tool_response` nests deeper than 64 levels"));
}

// ---- encode ----

fn encode(req: &HttpRequest, v: &Verdict) -> Value {
    let JsonReply { status, content_type, body, .. } = testing::encode_json::<CodexCli>(req, v).unwrap();
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    body
}

fn modify(params: Option<&str>) -> Verdict {
    let mut v = testing::verdict(Decision::Modify, "rewritten");
    v.modified_parameters_json = params.map(str::to_owned);
    v
}

fn undecided(decision: Decision, reason: &str) -> Verdict {
    let mut v = testing::verdict(decision, reason);
    v.decided = false;
    v
}

fn receipt(mut v: Verdict, id: &str) -> Verdict {
    v.receipt_id = Some(id.into());
    v
}

fn pto(decision: &str, reason: &str) -> Value {
    json!({"hookSpecificOutput": {"hookEventName": "PreToolUse",
        "permissionDecision": decision, "permissionDecisionReason": reason}})
}

// PreToolUse: allow is `{}`; deny, STEP_UP and DEFER are denies with a non-empty reason.
#[test]
fn pre_tool_use_replies() {
    let req = request("PreToolUse.json");
    let v = testing::verdict;
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({}));
    assert_eq!(encode(&req, &receipt(v(Decision::Deny, "no rm"), "r1")), pto("deny", "no rm [arbiter receipt r1]"));
    assert_eq!(encode(&req, &v(Decision::Deny, "")), pto("deny", "blocked by Arbiter policy"));
    assert_eq!(
        encode(&req, &v(Decision::StepUp, "prod change")),
        pto(
            "deny",
            "approval required: prod change. The action did not run; it awaits approval: retry exactly the same \
             action once it is approved"
        )
    );
    assert_eq!(
        encode(&req, &v(Decision::Defer, "needs a ticket")),
        pto(
            "deny",
            "deferred: needs a ticket. The action did not run; it awaits evidence: retry exactly the same action later"
        )
    );
}

// MODIFY: allow with the full rewritten input; unusable parameters deny.
#[test]
fn pre_tool_use_modify() {
    let req = request("PreToolUse.json");
    let params = r#"{"command":"echo safe"}"#;
    assert_eq!(
        encode(&req, &modify(Some(params))),
        json!({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
            "permissionDecisionReason": "rewritten", "updatedInput": json_of(params)}})
    );
    for bad in [None, Some("not json"), Some("[1]")] {
        assert_eq!(
            encode(&req, &modify(bad)),
            pto("deny", "modify verdict without usable modified parameters: rewritten"),
            "{bad:?}"
        );
    }
}

// PermissionRequest: allow stays neutral unless the integration opts in; everything else that blocks denies.
#[test]
fn permission_request_replies() {
    let mut body = fixture_json("PreToolUse.json");
    body["hook_event_name"] = json!("PermissionRequest");
    let req = testing::json_request(body.to_string());
    let v = testing::verdict;
    let pr = |d: Value| json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": d}});
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({}));
    testing::set_setting("approve_permission_requests", "true");
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), pr(json!({"behavior": "allow"})));
    testing::clear_settings();
    assert_eq!(encode(&req, &v(Decision::Deny, "no")), pr(json!({"behavior": "deny", "message": "no"})));
    assert_eq!(encode(&req, &v(Decision::StepUp, "x"))["hookSpecificOutput"]["decision"]["behavior"], "deny");
    assert_eq!(encode(&req, &v(Decision::Defer, "x"))["hookSpecificOutput"]["decision"]["behavior"], "deny");
    assert_eq!(
        encode(&req, &receipt(modify(Some("{}")), "r3")),
        pr(json!({"behavior": "deny", "message":
            "the rewrite cannot be applied to a PermissionRequest (use the PreToolUse hook): rewritten [arbiter receipt r3]"}))
    );
}

// Non-decision events get `{}`; a blocking verdict on UserPromptSubmit blocks the prompt.
#[test]
fn non_decision_replies() {
    for name in ["UserPromptSubmit.json", "PostToolUse.json", "SessionStart.json", "Stop.json"] {
        assert_eq!(encode(&request(name), &undecided(Decision::Allow, "recorded")), json!({}), "{name}");
    }
    assert_eq!(
        encode(&request("UserPromptSubmit.json"), &undecided(Decision::Deny, "context store down")),
        json!({"decision": "block", "reason": "context store down"})
    );
    // On Stop a `block` would keep the agent working: stay neutral.
    assert_eq!(encode(&request("Stop.json"), &undecided(Decision::Deny, "no")), json!({}));
    assert_eq!(encode(&request("PostToolUse.json"), &undecided(Decision::Deny, "no")), json!({}));
    // A deny still blocks a tool call even if the host did not mark it decided.
    assert_eq!(encode(&request("PreToolUse.json"), &undecided(Decision::Deny, "no")), pto("deny", "no"));
}

fn has_value(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(a) => a.iter().any(|x| has_value(x, needle)),
        Value::Object(m) => m.values().any(|x| has_value(x, needle)),
        _ => false,
    }
}

// `ask` is never sent, and every reply uses only the fields Codex's schemas allow.
#[test]
fn never_asks_and_stays_in_schema() {
    let mut reqs: Vec<HttpRequest> =
        testing::fixture_paths(fixtures(V)).unwrap().iter().map(|p| testing::fixture_request(p).unwrap()).collect();
    let mut pr = fixture_json("PreToolUse.json");
    pr["hook_event_name"] = json!("PermissionRequest");
    reqs.push(testing::json_request(pr.to_string()));
    reqs.push(testing::json_request("not json"));
    for req in &reqs {
        for d in [Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp, Decision::Defer] {
            for decided in [true, false] {
                let mut v = testing::verdict(d, "");
                v.decided = decided;
                v.modified_parameters_json = Some(r#"{"command":"ls"}"#.into());
                let body = encode(req, &v);
                assert!(!has_value(&body, "ask"), "{d:?}: {body}");
                let top: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
                assert!(top.iter().all(|k| ["hookSpecificOutput", "decision", "reason"].contains(k)), "{body}");
                if let Some(hso) = body.get("hookSpecificOutput") {
                    let allowed =
                        ["hookEventName", "permissionDecision", "permissionDecisionReason", "updatedInput", "decision"];
                    assert!(hso.as_object().unwrap().keys().all(|k| allowed.contains(&k.as_str())), "{body}");
                    if hso["permissionDecision"] == "allow" {
                        assert!(hso.get("updatedInput").is_some(), "bare allow fails the hook: {body}");
                    }
                    if hso["permissionDecision"] == "deny" {
                        assert!(!hso["permissionDecisionReason"].as_str().unwrap().trim().is_empty());
                    }
                }
                if body.get("decision") == Some(&json!("block")) {
                    assert!(!body["reason"].as_str().unwrap().trim().is_empty(), "{body}");
                }
            }
        }
    }
}

// A body that no longer parses gets the blocking shape unless the verdict is a plain allow.
#[test]
fn unreadable_request_replies() {
    let req = testing::json_request("not json");
    assert_eq!(
        encode(&req, &testing::verdict(Decision::Deny, "why")),
        json_of(&BLOCKING_REPLY.replace("{{reason}}", "why"))
    );
    assert_eq!(encode(&req, &modify(Some("{}")))["decision"], "block");
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
}

// describe: identity, decisions, events, and a blocking reply that parses and blocks.
#[test]
fn describe_plugin() {
    let info = CodexCli::describe();
    assert_eq!(info.name, "codex-cli");
    assert_eq!(info.vendor, "OpenAI Codex CLI");
    assert_eq!(info.vendor_versions, vec!["0.169.0".to_owned()]);
    assert_eq!(info.decisions, vec![Decision::Allow, Decision::Deny, Decision::Modify]);
    for e in ["UserPromptSubmit", "PreToolUse", "PermissionRequest", "PostToolUse", "SessionStart", "Stop"] {
        assert!(info.events.iter().any(|x| x == e), "{e}");
    }
    let reply = &info.blocking_reply;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body, json!({"decision": "block", "reason": "{{reason}}"}));
}
