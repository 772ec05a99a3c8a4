//! The adapter against every real Gemini CLI fixture, plus malformed input.

use std::path::{Path, PathBuf};

use arbiter_sdk::testing::{self, JsonReply};
use arbiter_sdk::{Action, Adapter, Decision, DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Verdict};
use serde_json::{Value, json};

use crate::{BLOCKING_REPLY, GeminiCli, MAX_JSON_DEPTH, MAX_TARGETS, VENDOR_VERSIONS};

const V: &str = "0.61.0";
const SESSION: &str = "0749434a-8078-4c02-ae8f-60bcfe6c705e";
const CWD: &str = "/home/dev/work/gem/proj";

fn fixtures(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gemini-cli").join(version)
}

fn request(name: &str) -> HttpRequest {
    testing::fixture_request(fixtures(V).join(name)).unwrap()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures(V).join(name)).unwrap()).unwrap()
}

fn decode_value(body: &Value) -> Result<Decoded, DecodeError> {
    GeminiCli::decode(&testing::json_request(body.to_string()))
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

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// The canonical event each 0.61.0 fixture must decode to.
fn expected(name: &str) -> Event {
    match name {
        "BeforeAgent.json" => Event::Intent(Intent { text: "run the greeting".into(), event_kind: "BeforeAgent".into() }),
        "BeforeTool.json" => Event::Action(Action {
            tool: "shell".into(),
            operation: "exec".into(),
            parameters_json: json!({"command": "echo hello-from-fake", "description": "greet"}).to_string(),
            resource: None,
            original_tool: "run_shell_command".into(),
            event_kind: "BeforeTool".into(),
            call_id: None,
        }),
        "AfterTool.json" => Event::Observation(arbiter_sdk::Observation {
            original_tool: "run_shell_command".into(),
            tool: "shell".into(),
            operation: "exec".into(),
            output_json: json!({
                "llmContent": "<untrusted_context>\nOutput: hello-from-fake\nProcess Group PGID: 32498\n</untrusted_context>",
                "returnDisplay": "hello-from-fake"})
            .to_string(),
            event_kind: "AfterTool".into(),
            call_id: None,
        }),
        "SessionStart.json" => Event::SessionStart(Lifecycle {
            event_kind: "SessionStart".into(),
            detail_json: json!({"source": "startup"}).to_string(),
        }),
        "SessionEnd.json" => Event::SessionEnd(Lifecycle {
            event_kind: "SessionEnd".into(),
            detail_json: json!({"reason": "exit"}).to_string(),
        }),
        "AfterAgent.json" => Event::Other(Lifecycle {
            event_kind: "AfterAgent".into(),
            detail_json: json!({"prompt": "run the greeting", "prompt_response": "done", "stop_hook_active": false})
                .to_string(),
        }),
        // The model request is summarised, not copied into the session log.
        "BeforeToolSelection.json" => Event::Other(Lifecycle {
            event_kind: "BeforeToolSelection".into(),
            detail_json: json!({"llm_request": {"model": "gemini-3.8-flash", "messages": 1}}).to_string(),
        }),
        "Notification.json" => Event::Other(Lifecycle {
            event_kind: "Notification".into(),
            detail_json: json!({"notification_type": "ToolPermission",
                "message": "Tool Confirm Shell Command requires execution",
                "details": {"type": "exec", "title": "Confirm Shell Command",
                            "command": "echo hello-from-fake", "rootCommand": "echo"}})
            .to_string(),
        }),
        other => panic!("fixture {other} has no expectation: add one"),
    }
}

// Every fixture of every tested version decodes to exactly the expected event.
#[test]
fn every_fixture_maps_exactly() {
    assert_eq!(VENDOR_VERSIONS, &[V]);
    let paths = testing::fixture_paths(fixtures(V)).unwrap();
    assert_eq!(paths.len(), 8, "fixtures missing: {paths:?}");
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        let decoded = testing::decode_fixture::<GeminiCli>(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded.events, vec![expected(name)], "{name}");
        let body = fixture_json(name);
        assert_eq!(decoded.requester.session, body["session_id"].as_str().unwrap(), "{name}");
        assert_eq!(decoded.requester.agent.as_deref(), Some("gemini-cli"), "{name}");
        assert_eq!(decoded.requester.service.as_deref(), Some("gemini-cli"), "{name}");
        assert!(decoded.requester.delegation_chain.is_empty(), "{name}");
    }
}

// The requester carries the vendor facts and the integration's settings.
#[test]
fn requester_from_settings_and_payload() {
    testing::set_setting("human", "alice@example.com");
    testing::set_setting("roles", "deployer, ,on-call");
    let decoded = testing::decode_fixture::<GeminiCli>(fixtures(V).join("BeforeTool.json")).unwrap();
    let r = &decoded.requester;
    assert_eq!(r.session, SESSION);
    assert_eq!(r.human.as_deref(), Some("alice@example.com"));
    assert_eq!(r.roles, vec!["deployer".to_owned(), "on-call".to_owned()]);
    assert_eq!(
        json_of(&r.attributes_json),
        json!({"cwd": CWD,
               "transcript_path": "/home/dev/work/gem/home/.gemini/tmp/proj/chats/session-2026-11-23T00-41-0749434a.jsonl"})
    );
    testing::clear_settings();
    let decoded = testing::decode_fixture::<GeminiCli>(fixtures(V).join("BeforeTool.json")).unwrap();
    assert_eq!(decoded.requester.human, None);
    assert!(decoded.requester.roles.is_empty());
}

fn before_tool(name: &str, input: Value) -> Vec<Action> {
    let mut body = fixture_json("BeforeTool.json");
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

// Every built-in tool maps to its canonical tool, operation and targets; relative paths resolve against cwd.
#[test]
fn tool_mapping() {
    let cases: &[(&str, Value, &str, &str, &[&str])] = &[
        ("run_shell_command", json!({"command": "ls", "dir_path": "sub"}), "shell", "exec", &[]),
        ("read_file", json!({"file_path": "/etc/hosts"}), "file", "read", &["/etc/hosts"]),
        ("read_file", json!({"absolute_path": "/etc/hosts"}), "file", "read", &["/etc/hosts"]),
        ("read_file", json!({"file_path": "src/../.env"}), "file", "read", &["/home/dev/work/gem/proj/.env"]),
        ("list_directory", json!({"dir_path": "/home"}), "file", "read", &["/home"]),
        ("glob", json!({"pattern": "**/*.rs", "dir_path": "src"}), "file", "read", &["/home/dev/work/gem/proj/src"]),
        ("grep_search", json!({"pattern": "TODO"}), "file", "read", &[]),
        ("search_file_content", json!({"pattern": "x", "dir_path": "/opt"}), "file", "read", &["/opt"]),
        (
            "read_many_files",
            json!({"include": ["docs/*.md", "/etc/passwd"]}),
            "file",
            "read",
            &["/home/dev/work/gem/proj/docs/*.md", "/etc/passwd"],
        ),
        ("write_file", json!({"file_path": "/tmp/x", "content": "y"}), "file", "write", &["/tmp/x"]),
        (
            "replace",
            json!({"file_path": "a.txt", "old_string": "a", "new_string": "b"}),
            "file",
            "write",
            &["/home/dev/work/gem/proj/a.txt"],
        ),
        (
            "web_fetch",
            json!({"prompt": "Summarize https://example.com/a and http://intranet.local/b."}),
            "network",
            "egress",
            &["https://example.com/a", "http://intranet.local/b"],
        ),
        ("web_fetch", json!({"url": "https://x.test/"}), "network", "egress", &["https://x.test/"]),
        ("google_web_search", json!({"query": "rust"}), "network", "egress", &[]),
        ("mcp_github_create_issue", json!({"title": "t"}), "mcp", "call", &["mcp://github/create_issue"]),
        ("mcp__db__run_query", json!({}), "mcp", "call", &["mcp://db/run_query"]),
        ("save_memory", json!({"fact": "f"}), "save_memory", "call", &[]),
        ("write_todos", json!({"todos": []}), "write_todos", "call", &[]),
        ("discovered_tool_Deploy", json!({}), "discovered_tool_deploy", "call", &[]),
    ];
    for (name, input, tool, operation, resources) in cases {
        let actions = before_tool(name, input.clone());
        let got: Vec<Option<&str>> = actions.iter().map(|a| a.resource.as_deref()).collect();
        let want: Vec<Option<&str>> =
            if resources.is_empty() { vec![None] } else { resources.iter().map(|r| Some(*r)).collect() };
        assert_eq!(got, want, "{name}");
        for a in &actions {
            assert_eq!((a.tool.as_str(), a.operation.as_str()), (*tool, *operation), "{name}");
            assert_eq!(a.original_tool, *name);
            assert_eq!(a.parameters_json, input.to_string(), "{name}: parameters are the input unchanged");
            assert_eq!(a.event_kind, "BeforeTool");
        }
    }
}

// An MCP tool is named by mcp_context when Gemini sends it.
#[test]
fn mcp_context_names_the_server() {
    let mut body = fixture_json("BeforeTool.json");
    body["tool_name"] = json!("mcp_my_server_list_items");
    body["tool_input"] = json!({"q": 1});
    body["mcp_context"] = json!({"server_name": "my_server", "tool_name": "list_items", "url": "https://mcp.test"});
    let decoded = decode_value(&body).unwrap();
    let Event::Action(a) = only_event(&decoded) else { panic!("not an action") };
    assert_eq!((a.tool.as_str(), a.resource.as_deref()), ("mcp", Some("mcp://my_server/list_items")));
    assert_eq!(json_of(&decoded.requester.attributes_json)["mcp_context"]["url"], "https://mcp.test");
    // Without the tool name in the context, the prefix is stripped from the name.
    body["mcp_context"] = json!({"server_name": "my_server"});
    let decoded = decode_value(&body).unwrap();
    let Event::Action(a) = only_event(&decoded) else { panic!("not an action") };
    assert_eq!(a.resource.as_deref(), Some("mcp://my_server/list_items"));
}

// A tool call with more targets than the limit is refused, not decided on a subset.
#[test]
fn too_many_targets_are_refused() {
    let include: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("/f{i}")).collect();
    let mut body = fixture_json("BeforeTool.json");
    body["tool_name"] = json!("read_many_files");
    body["tool_input"] = json!({ "include": include });
    assert!(malformed_message(&body).contains("acts on 65 targets, over the 64-target limit"));
    // Duplicates count once.
    body["tool_input"] = json!({"include": vec!["/same"; 100]});
    assert_eq!(decode_value(&body).unwrap().events.len(), 1);
}

// Malformed bodies are refused with a message that names the problem.
#[test]
fn malformed_inputs() {
    let pre = fixture_json("BeforeTool.json");
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
        (json!([1]), "body is not a JSON object"),
        (without("hook_event_name"), "missing `hook_event_name`"),
        (with("hook_event_name", json!(1)), "`hook_event_name` is not a string"),
        (with("hook_event_name", json!("Before Tool")), "`Before Tool` is not an event name"),
        (without("session_id"), "missing `session_id`"),
        (with("session_id", json!("")), "the session id is empty"),
        (with("session_id", json!("s".repeat(257))), "`session id` is 257 bytes"),
        (without("tool_name"), "missing `tool_name`"),
        (with("tool_name", json!("")), "`tool_name` is empty"),
        (with("tool_name", json!("t".repeat(257))), "`tool_name` is 257 bytes"),
        (with("tool_name", json!("???")), "tool name `???` has no letter or digit"),
        (without("tool_input"), "missing `tool_input`"),
        (with("tool_input", json!("ls")), "`tool_input` is not a JSON object"),
        (with("cwd", json!(3)), "`cwd` is not a string"),
        (
            with("tool_input", json!({"file_path": format!("/{}", "a".repeat(4096))})).tap("read_file"),
            "`resource` is 4097 bytes",
        ),
        (json!({"session_id": "s", "hook_event_name": "BeforeAgent"}), "missing `prompt`"),
        (json!({"session_id": "s", "hook_event_name": "AfterTool", "tool_response": {}}), "missing `tool_name`"),
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

// A request routed to an event URL must carry that event.
#[test]
fn path_event_must_match() {
    let mut req = request("BeforeTool.json");
    req.path = "/BeforeTool".into();
    assert!(GeminiCli::decode(&req).is_ok());
    req.path = "/AfterTool".into();
    match GeminiCli::decode(&req) {
        Err(DecodeError::Malformed(m)) => assert!(m.contains("URL names event `AfterTool`"), "{m}"),
        other => panic!("{other:?}"),
    }
    req.path = "/../x".into();
    assert!(matches!(GeminiCli::decode(&req), Err(DecodeError::Malformed(_))));
}

// Bodies that are not JSON, or over the size limit, are malformed.
#[test]
fn non_json_and_oversized_bodies() {
    for body in [&b"not json"[..], b"", b"{\"session_id\": \"s\",", b"\xff\xfe"] {
        match GeminiCli::decode(&testing::json_request(body)) {
            Err(DecodeError::Malformed(m)) => assert!(m.starts_with("body is not valid JSON"), "{m}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let big = json!({"session_id": "s", "hook_event_name": "BeforeAgent", "prompt": "a".repeat(crate::DEFAULT_MAX_BODY_BYTES)});
    assert!(malformed_message(&big).contains("over the 1048576-byte limit"));
    testing::set_setting("max_body_bytes", "2097152");
    assert!(decode_value(&big).is_ok());
    testing::set_setting("max_body_bytes", "100");
    assert!(malformed_message(&fixture_json("BeforeTool.json")).contains("over the 100-byte limit"));
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
    assert_eq!(before_tool("run_shell_command", nested(MAX_JSON_DEPTH)).len(), 1);
    let mut body = fixture_json("BeforeTool.json");
    body["tool_input"] = nested(MAX_JSON_DEPTH + 1);
    assert!(malformed_message(&body).contains("`tool_input` nests deeper than 64 levels"));
    let mut body = fixture_json("AfterTool.json");
    body["tool_response"] = json!([nested(MAX_JSON_DEPTH)]);
    assert!(malformed_message(&body).contains("`tool_response` nests deeper than 64 levels"));
}

// ---- encode ----

fn encode(req: &HttpRequest, v: &Verdict) -> Value {
    let JsonReply { status, content_type, body, .. } = testing::encode_json::<GeminiCli>(req, v).unwrap();
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

// BeforeTool: allow/deny; STEP_UP and DEFER are denies that say to retry later.
#[test]
fn before_tool_replies() {
    let req = request("BeforeTool.json");
    let v = testing::verdict;
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({"decision": "allow", "reason": "ok"}));
    assert_eq!(
        encode(&req, &receipt(v(Decision::Deny, "rm is forbidden"), "r1")),
        json!({"decision": "deny", "reason": "rm is forbidden [arbiter receipt r1]"})
    );
    assert_eq!(
        encode(&req, &v(Decision::StepUp, "prod change")),
        json!({"decision": "deny", "reason": "approval required: prod change. The action did not run; it awaits \
            approval: retry exactly the same action once it is approved"})
    );
    assert_eq!(
        encode(&req, &receipt(v(Decision::Defer, "needs a ticket"), "r2")),
        json!({"decision": "deny", "reason": "deferred: needs a ticket. The action did not run; it awaits \
            evidence: retry exactly the same action later [arbiter receipt r2]"})
    );
    // The host's hold reason already names the deferral and says how to retry.
    let held = "needs a ticket; deferral `def-7` waits for that evidence: retry exactly the same action later";
    assert_eq!(
        encode(&req, &v(Decision::Defer, held)),
        json!({"decision": "deny", "reason": format!("deferred: {held}")})
    );
    // A hold-mode STEP_UP reaches the plugin as a deny naming the approval.
    let approval = "approval required (prod); approval `apr-1` is pending: once an approver approves it, retry \
                    exactly the same action";
    assert_eq!(encode(&req, &v(Decision::Deny, approval)), json!({"decision": "deny", "reason": approval}));
    // An empty reason still gives the agent one.
    assert_eq!(
        encode(&req, &v(Decision::Deny, "")),
        json!({"decision": "deny", "reason": "blocked by Arbiter policy"})
    );
}

// `allow_reply = "neutral"` answers an allow with `{}`; blocks are unchanged.
#[test]
fn neutral_allow_reply() {
    testing::set_setting("allow_reply", "neutral");
    let req = request("BeforeTool.json");
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
    assert_eq!(encode(&req, &testing::verdict(Decision::Deny, "no")), json!({"decision": "deny", "reason": "no"}));
}

// MODIFY: an allow whose tool_input is merged by Gemini, so dropped arguments are nulled.
#[test]
fn before_tool_modify() {
    let req = request("BeforeTool.json");
    let body = encode(&req, &modify(Some(r#"{"command":"echo safe"}"#)));
    assert_eq!(
        body,
        json!({"decision": "allow", "reason": "rewritten", "hookSpecificOutput": {
            "hookEventName": "BeforeTool", "tool_input": {"command": "echo safe", "description": null}}})
    );
    let full = r#"{"command":"echo safe","description":"greet"}"#;
    assert_eq!(encode(&req, &modify(Some(full)))["hookSpecificOutput"]["tool_input"], json_of(full));
    for bad in [None, Some("not json"), Some("[1]"), Some("\"x\"")] {
        assert_eq!(
            encode(&req, &modify(bad)),
            json!({"decision": "deny", "reason": "modify verdict without usable modified parameters: rewritten"}),
            "{bad:?}"
        );
    }
}

// Non-decision events get `{}`; a blocking verdict on BeforeAgent blocks the turn.
#[test]
fn non_decision_replies() {
    for name in [
        "BeforeAgent.json",
        "AfterTool.json",
        "AfterAgent.json",
        "SessionStart.json",
        "SessionEnd.json",
        "BeforeToolSelection.json",
        "Notification.json",
    ] {
        assert_eq!(encode(&request(name), &undecided(Decision::Allow, "recorded")), json!({}), "{name}");
    }
    let prompt = request("BeforeAgent.json");
    assert_eq!(
        encode(&prompt, &undecided(Decision::Deny, "blocked: the session context could not be recorded")),
        json!({"decision": "deny", "reason": "blocked: the session context could not be recorded"})
    );
    // `deny` on AfterAgent would force a retry turn: stay neutral.
    assert_eq!(encode(&request("AfterAgent.json"), &undecided(Decision::Deny, "no")), json!({}));
    assert_eq!(encode(&request("AfterTool.json"), &undecided(Decision::Deny, "no")), json!({}));
    // A deny still blocks a tool call even if the host did not mark it decided.
    assert_eq!(
        encode(&request("BeforeTool.json"), &undecided(Decision::Deny, "no")),
        json!({"decision": "deny", "reason": "no"})
    );
    assert_eq!(encode(&request("BeforeTool.json"), &undecided(Decision::Allow, "ok")), json!({}));
}

fn has_value(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(a) => a.iter().any(|x| has_value(x, needle)),
        Value::Object(m) => m.values().any(|x| has_value(x, needle)),
        _ => false,
    }
}

// `ask` is never sent, whatever the event and decision.
#[test]
fn never_asks() {
    let mut reqs: Vec<HttpRequest> =
        testing::fixture_paths(fixtures(V)).unwrap().iter().map(|p| testing::fixture_request(p).unwrap()).collect();
    reqs.push(testing::json_request("not json"));
    for req in &reqs {
        for d in [Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp, Decision::Defer] {
            for decided in [true, false] {
                let mut v = testing::verdict(d, "why");
                v.decided = decided;
                v.modified_parameters_json = Some(r#"{"command":"ls"}"#.into());
                let body = encode(req, &v);
                assert!(!has_value(&body, "ask"), "{d:?}: {body}");
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
    assert_eq!(encode(&req, &modify(Some("{}")))["decision"], "deny");
    assert_eq!(encode(&req, &testing::verdict(Decision::StepUp, "x"))["decision"], "deny");
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
}

// describe: identity, decisions, events, and a blocking reply that parses and blocks.
#[test]
fn describe_plugin() {
    let info = GeminiCli::describe();
    assert_eq!(info.name, "gemini-cli");
    assert_eq!(info.vendor, "Gemini CLI");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.vendor_versions, vec!["0.61.0".to_owned()]);
    assert_eq!(info.decisions, vec![Decision::Allow, Decision::Deny, Decision::Modify]);
    for e in ["BeforeAgent", "BeforeTool", "AfterTool", "SessionStart", "SessionEnd", "BeforeToolSelection"] {
        assert!(info.events.iter().any(|x| x == e), "{e}");
    }
    let reply = &info.blocking_reply;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body, json!({"decision": "deny", "reason": "{{reason}}"}));
}
