//! The adapter against every Cursor fixture (written from documentation:
//! tests/fixtures/cursor/documented/README.md), plus malformed input.

use std::path::{Path, PathBuf};

use arbiter_sdk::testing::{self, JsonReply};
use arbiter_sdk::{
    Action, Adapter, Decision, DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Observation, Verdict,
};
use serde_json::{Value, json};

use crate::{BLOCKING_REPLY, Cursor, MAX_JSON_DEPTH, MAX_TARGETS, VENDOR_VERSIONS};

const CONVERSATION: &str = "668320d2-2fd8-4888-b33c-2a466fec86e7";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cursor/documented")
}

fn request(name: &str) -> HttpRequest {
    testing::fixture_request(fixtures().join(name)).unwrap()
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap()
}

fn decode_value(body: &Value) -> Result<Decoded, DecodeError> {
    Cursor::decode(&testing::json_request(body.to_string()))
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

fn action(tool: &str, op: &str, params: Value, resource: Option<&str>, original: &str, event: &str) -> Event {
    action_with_id(tool, op, params, resource, original, event, None)
}

fn action_with_id(
    tool: &str,
    op: &str,
    params: Value,
    resource: Option<&str>,
    original: &str,
    event: &str,
    call_id: Option<&str>,
) -> Event {
    Event::Action(Action {
        tool: tool.into(),
        operation: op.into(),
        parameters_json: params.to_string(),
        resource: resource.map(str::to_owned),
        original_tool: original.into(),
        event_kind: event.into(),
        call_id: call_id.map(str::to_owned),
    })
}

fn observation(original: &str, tool: &str, op: &str, output: Value, event: &str, call_id: Option<&str>) -> Event {
    Event::Observation(Observation {
        original_tool: original.into(),
        tool: tool.into(),
        operation: op.into(),
        output_json: output.to_string(),
        event_kind: event.into(),
        call_id: call_id.map(str::to_owned),
    })
}

fn lifecycle(event: &str, detail: Value) -> Lifecycle {
    Lifecycle { event_kind: event.into(), detail_json: detail.to_string() }
}

/// The canonical event each fixture must decode to.
fn expected(name: &str) -> Event {
    match name {
        "beforeSubmitPrompt.json" => Event::Intent(Intent {
            text: "list the files in the project".into(),
            event_kind: "beforeSubmitPrompt".into(),
        }),
        "beforeShellExecution.json" => {
            action("shell", "exec", json!({"command": "ls -la"}), None, "shell", "beforeShellExecution")
        }
        "beforeMCPExecution.json" => action(
            "mcp",
            "call",
            json!({"repo": "acme/app", "title": "Flaky test"}),
            Some("mcp://github/create_issue"),
            "MCP:github:create_issue",
            "beforeMCPExecution",
        ),
        "beforeMCPExecution-object-input.json" => action(
            "mcp",
            "call",
            json!({"query": "SELECT id FROM users"}),
            None,
            "database_query",
            "beforeMCPExecution",
        ),
        // The content Cursor read is not kept: only its size.
        "beforeReadFile.json" => action(
            "file",
            "read",
            json!({"file_path": "/Users/dev/proj/.env", "content_bytes": 22,
                   "attachments": [{"type": "file", "filePath": "/Users/dev/proj/.cursorrules"}]}),
            Some("/Users/dev/proj/.env"),
            "read_file",
            "beforeReadFile",
        ),
        // A relative path resolves against the first workspace root.
        "beforeTabFileRead.json" => action(
            "file",
            "read",
            json!({"file_path": "src/main.ts", "content_bytes": 20}),
            Some("/Users/dev/proj/src/main.ts"),
            "read_file",
            "beforeTabFileRead",
        ),
        "preToolUse.json" => action_with_id(
            "shell",
            "exec",
            json!({"command": "npm test"}),
            None,
            "Shell",
            "preToolUse",
            Some("toolu_01Cursor7"),
        ),
        "afterShellExecution.json" => {
            observation("shell", "shell", "exec", json!("total 8\nREADME.md\nsrc\n"), "afterShellExecution", None)
        }
        // result_json is a JSON string: parsed, so classification sees its fields.
        "afterMCPExecution.json" => observation(
            "MCP:github:create_issue",
            "mcp",
            "call",
            json!({"number": 42, "url": "https://github.com/acme/app/issues/42"}),
            "afterMCPExecution",
            None,
        ),
        "afterFileEdit.json" => observation(
            "edit_file",
            "file",
            "write",
            json!({"file_path": "/Users/dev/proj/src/main.ts",
                   "edits": [{"old_string": "const foo = 1", "new_string": "const foo = 2"}]}),
            "afterFileEdit",
            None,
        ),
        "afterTabFileEdit.json" => observation(
            "edit_file",
            "file",
            "write",
            json!({"file_path": "/Users/dev/proj/src/util.ts", "edits": fixture_json("afterTabFileEdit.json")["edits"]}),
            "afterTabFileEdit",
            None,
        ),
        "postToolUse.json" => observation(
            "Shell",
            "shell",
            "exec",
            json!({"exitCode": 0, "stdout": "12 passing"}),
            "postToolUse",
            Some("toolu_01Cursor7"),
        ),
        "postToolUseFailure.json" => observation(
            "Read",
            "file",
            "read",
            json!({"error_message": "ENOENT: no such file or directory", "failure_type": "error"}),
            "postToolUseFailure",
            Some("toolu_01Cursor8"),
        ),
        "sessionStart.json" => Event::SessionStart(lifecycle(
            "sessionStart",
            json!({"is_background_agent": false, "composer_mode": "agent"}),
        )),
        "sessionEnd.json" => {
            Event::SessionEnd(lifecycle("sessionEnd", json!({"reason": "user_close", "duration_ms": 912000})))
        }
        "stop.json" => Event::Other(lifecycle("stop", json!({"status": "completed", "loop_count": 0}))),
        // Agent text is summarised, not copied into the session log.
        "afterAgentResponse.json" => Event::Other(lifecycle("afterAgentResponse", json!({"text": {"chars": 42}}))),
        "afterAgentThought.json" => {
            Event::Other(lifecycle("afterAgentThought", json!({"text": {"chars": 39}, "duration_ms": 900})))
        }
        other => panic!("fixture {other} has no expectation: add one"),
    }
}

// Every fixture decodes to exactly the expected event, for the conversation
// and the signed-in user.
#[test]
fn every_fixture_maps_exactly() {
    assert_eq!(VENDOR_VERSIONS, &["documented (1.7+, not captured)"]);
    let paths = testing::fixture_paths(fixtures()).unwrap();
    assert_eq!(paths.len(), 18, "fixtures missing: {paths:?}");
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        let decoded = testing::decode_fixture::<Cursor>(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded.events, vec![expected(name)], "{name}");
        let r = &decoded.requester;
        assert_eq!(r.session, CONVERSATION, "{name}");
        assert_eq!(r.human.as_deref(), Some("dev@example.com"), "{name}");
        assert_eq!((r.agent.as_deref(), r.service.as_deref()), (Some("cursor"), Some("cursor")), "{name}");
        assert!(r.delegation_chain.is_empty(), "{name}");
    }
}

// The requester carries the vendor facts; without user_email the human comes from the settings.
#[test]
fn requester_from_payload_and_settings() {
    testing::set_setting("human", "ops@example.com");
    testing::set_setting("roles", "deployer, ,on-call");
    let decoded = testing::decode_fixture::<Cursor>(fixtures().join("beforeShellExecution.json")).unwrap();
    let r = &decoded.requester;
    assert_eq!(r.human.as_deref(), Some("dev@example.com"), "user_email wins over the setting");
    assert_eq!(r.roles, vec!["deployer".to_owned(), "on-call".to_owned()]);
    assert_eq!(
        json_of(&r.attributes_json),
        json!({"generation_id": "490b90b7-a2ce-4c2c-bb76-cb77b125df2f", "model": "claude-sonnet-4.5",
               "cursor_version": "2.0.77", "workspace_roots": ["/Users/dev/proj"], "transcript_path": null,
               "cwd": "/Users/dev/proj"})
    );
    let mut body = fixture_json("beforeShellExecution.json");
    for email in [Value::Null, json!(""), json!("  ")] {
        body["user_email"] = email;
        assert_eq!(decode_value(&body).unwrap().requester.human.as_deref(), Some("ops@example.com"));
    }
    body.as_object_mut().unwrap().remove("user_email");
    testing::clear_settings();
    assert_eq!(decode_value(&body).unwrap().requester.human, None);
    // A newer payload with only session_id still has a session.
    body.as_object_mut().unwrap().remove("conversation_id");
    body["session_id"] = json!("s-only");
    assert_eq!(decode_value(&body).unwrap().requester.session, "s-only");
}

// The MCP server's url or command is recorded, since a plain tool name does not name it.
#[test]
fn mcp_server_is_an_attribute() {
    let a = |name: &str| {
        json_of(&testing::decode_fixture::<Cursor>(fixtures().join(name)).unwrap().requester.attributes_json)
    };
    assert_eq!(a("beforeMCPExecution-object-input.json")["mcp_server"], json!({"url": "http://localhost:3000/mcp"}));
    assert_eq!(
        a("beforeMCPExecution.json")["mcp_server"],
        json!({"command": "npx -y @modelcontextprotocol/server-github"})
    );
    assert!(a("beforeShellExecution.json").get("mcp_server").is_none(), "a shell command is not an MCP server");
}

fn only_action(body: &Value) -> Action {
    let decoded = decode_value(body).unwrap();
    assert_eq!(decoded.events.len(), 1, "{decoded:?}");
    match decoded.events.into_iter().next() {
        Some(Event::Action(a)) => a,
        other => panic!("expected an action, got {other:?}"),
    }
}

// Both documented tool_input shapes and every MCP naming scheme decode.
#[test]
fn mcp_names_and_inputs() {
    let mut body = fixture_json("beforeMCPExecution.json");
    let cases: &[(&str, Value, Option<&str>, Value)] = &[
        ("MCP:github:create_issue", json!({"a": 1}), Some("mcp://github/create_issue"), json!({"a": 1})),
        ("mcp:db:run:query", json!("{\"q\":\"x\"}"), Some("mcp://db/run:query"), json!({"q": "x"})),
        ("mcp__db__run_query", json!(""), Some("mcp://db/run_query"), json!({})),
        ("database_query", json!("  "), None, json!({})),
    ];
    for (name, input, resource, params) in cases {
        body["tool_name"] = json!(name);
        body["tool_input"] = input.clone();
        let a = only_action(&body);
        assert_eq!((a.tool.as_str(), a.operation.as_str()), ("mcp", "call"), "{name}");
        assert_eq!(a.resource.as_deref(), *resource, "{name}");
        assert_eq!(json_of(&a.parameters_json), *params, "{name}");
        assert_eq!(a.original_tool, *name);
    }
}

// preToolUse: every recognised tool maps to its canonical tool, operation and targets.
#[test]
fn pre_tool_use_mapping() {
    let cases: &[(&str, Value, &str, &str, &[&str])] = &[
        ("Shell", json!({"command": "ls"}), "shell", "exec", &[]),
        ("run_terminal_cmd", json!({"command": "ls"}), "shell", "exec", &[]),
        ("Read", json!({"file_path": "/etc/hosts"}), "file", "read", &["/etc/hosts"]),
        ("read_file", json!({"target_file": "src/../.env"}), "file", "read", &["/Users/dev/proj/.env"]),
        ("Write", json!({"file_path": "a.txt", "content": "x"}), "file", "write", &["/Users/dev/proj/a.txt"]),
        ("edit_file", json!({"target_file": "/tmp/x"}), "file", "write", &["/tmp/x"]),
        ("Delete", json!({"path": "/srv/data"}), "file", "write", &["/srv/data"]),
        ("Grep", json!({"pattern": "x", "path": "src"}), "file", "read", &["/Users/dev/proj/src"]),
        ("list_dir", json!({"target_directory": "/home"}), "file", "read", &["/home"]),
        ("WebFetch", json!({"url": "https://x.test/"}), "network", "egress", &["https://x.test/"]),
        ("web_search", json!({"search_term": "rust"}), "network", "egress", &[]),
        ("MCP:jira:create_ticket", json!({}), "mcp", "call", &["mcp://jira/create_ticket"]),
        ("Task", json!({"prompt": "p"}), "task", "call", &[]),
    ];
    let mut body = fixture_json("preToolUse.json");
    for (name, input, tool, operation, resources) in cases {
        body["tool_name"] = json!(name);
        body["tool_input"] = input.clone();
        let actions: Vec<Action> = decode_value(&body)
            .unwrap()
            .events
            .into_iter()
            .map(|e| match e {
                Event::Action(a) => a,
                other => panic!("{name}: {other:?}"),
            })
            .collect();
        let got: Vec<Option<&str>> = actions.iter().map(|a| a.resource.as_deref()).collect();
        let want: Vec<Option<&str>> =
            if resources.is_empty() { vec![None] } else { resources.iter().map(|r| Some(*r)).collect() };
        assert_eq!(got, want, "{name}");
        for a in &actions {
            assert_eq!((a.tool.as_str(), a.operation.as_str()), (*tool, *operation), "{name}");
            assert_eq!(a.parameters_json, input.to_string(), "{name}: parameters are the input unchanged");
            assert_eq!((a.event_kind.as_str(), a.call_id.as_deref()), ("preToolUse", Some("toolu_01Cursor7")));
        }
    }
    // A string tool_input is accepted here too.
    body["tool_name"] = json!("Shell");
    body["tool_input"] = json!("{\"command\":\"ls\"}");
    assert_eq!(json_of(&only_action(&body).parameters_json), json!({"command": "ls"}));
}

// A web fetch naming more URLs than the limit is refused, not decided on a subset.
#[test]
fn too_many_targets_are_refused() {
    let prompt: Vec<String> = (0..=MAX_TARGETS).map(|i| format!("https://h{i}.test/")).collect();
    let mut body = fixture_json("preToolUse.json");
    body["tool_name"] = json!("WebFetch");
    body["tool_input"] = json!({"prompt": prompt.join(" ")});
    assert!(malformed_message(&body).contains("acts on 65 targets, over the 64-target limit"));
}

// Malformed bodies are refused with a message that names the problem.
#[test]
fn malformed_inputs() {
    let edit = |name: &str, f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut b = fixture_json(name);
        f(b.as_object_mut().unwrap());
        b
    };
    let without = |name: &str, key: &'static str| edit(name, &move |b| drop(b.remove(key)));
    let with = |name: &str, key: &'static str, v: Value| edit(name, &move |b| drop(b.insert(key.into(), v.clone())));
    let shell = "beforeShellExecution.json";
    let mcp = "beforeMCPExecution.json";
    let cases: Vec<(Value, &str)> = vec![
        (json!([1]), "body is not a JSON object"),
        (without(shell, "hook_event_name"), "missing `hook_event_name`"),
        (with(shell, "hook_event_name", json!(7)), "`hook_event_name` is not a string"),
        (with(shell, "hook_event_name", json!("before shell")), "`before shell` is not an event name"),
        (without(shell, "conversation_id"), "missing `conversation_id`"),
        (with(shell, "conversation_id", json!(1)), "`conversation_id` is not a string"),
        (with(shell, "conversation_id", json!("")), "the session id is empty"),
        (with(shell, "conversation_id", json!("c".repeat(257))), "`session id` is 257 bytes"),
        (with(shell, "user_email", json!(["a"])), "`user_email` is not a string"),
        (with(shell, "user_email", json!("e".repeat(257))), "`user_email` is 257 bytes"),
        (without(shell, "command"), "missing `command`"),
        (with(shell, "command", json!(["ls"])), "`command` is not a string"),
        (with(shell, "cwd", json!(1)), "`cwd` is not a string"),
        (without(mcp, "tool_name"), "missing `tool_name`"),
        (with(mcp, "tool_name", json!("")), "`tool_name` is empty"),
        (with(mcp, "tool_name", json!("MCP:github")), "MCP tool name `MCP:github` has no tool"),
        (with(mcp, "tool_name", json!("MCP::x")), "has no tool after the server"),
        (without(mcp, "tool_input"), "missing `tool_input`"),
        (with(mcp, "tool_input", json!("{not json")), "`tool_input` is a string that is not valid JSON"),
        (with(mcp, "tool_input", json!("[1,2]")), "`tool_input` is a string that does not hold a JSON object"),
        (with(mcp, "tool_input", json!(5)), "`tool_input` is neither a JSON object nor a JSON string"),
        (without("beforeReadFile.json", "file_path"), "missing `file_path`"),
        (with("beforeReadFile.json", "file_path", json!("")), "`file_path` is empty"),
        (with("beforeReadFile.json", "content", json!(1)), "`content` is not a string"),
        (with("beforeReadFile.json", "attachments", json!("x")), "`attachments` is not an array"),
        (with("beforeReadFile.json", "file_path", json!(format!("/{}", "a".repeat(4096)))), "`resource` is 4097 bytes"),
        (with("beforeTabFileRead.json", "workspace_roots", json!("/x")), "`workspace_roots` is not an array"),
        (without("preToolUse.json", "tool_input"), "missing `tool_input`"),
        (with("preToolUse.json", "tool_name", json!("???")), "tool name `???` has no letter or digit"),
        (with("preToolUse.json", "tool_use_id", json!("t".repeat(257))), "`tool_use_id` is 257 bytes"),
        (without("beforeSubmitPrompt.json", "prompt"), "missing `prompt`"),
        (without("afterMCPExecution.json", "tool_name"), "missing `tool_name`"),
        (without("afterFileEdit.json", "file_path"), "missing `file_path`"),
        (without("postToolUse.json", "tool_name"), "missing `tool_name`"),
        (without("postToolUseFailure.json", "tool_name"), "missing `tool_name`"),
    ];
    for (body, needle) in cases {
        let m = malformed_message(&body);
        assert!(m.contains(needle), "body {body}: `{m}` lacks `{needle}`");
    }
}

// A request routed to an event URL must carry that event.
#[test]
fn path_event_must_match() {
    let mut req = request("beforeShellExecution.json");
    req.path = "/beforeShellExecution".into();
    assert!(Cursor::decode(&req).is_ok());
    req.path = "/afterShellExecution".into();
    match Cursor::decode(&req) {
        Err(DecodeError::Malformed(m)) => assert!(m.contains("URL names event `afterShellExecution`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// Bodies that are not JSON, or over the size limit, are malformed.
#[test]
fn non_json_and_oversized_bodies() {
    for body in [&b"not json"[..], b"", b"{\"conversation_id\": \"c\",", b"\xff\xfe"] {
        match Cursor::decode(&testing::json_request(body)) {
            Err(DecodeError::Malformed(m)) => assert!(m.starts_with("body is not valid JSON"), "{m}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let big = json!({"conversation_id": "c", "hook_event_name": "beforeSubmitPrompt",
                     "prompt": "a".repeat(crate::DEFAULT_MAX_BODY_BYTES)});
    assert!(malformed_message(&big).contains("over the 1048576-byte limit"));
    testing::set_setting("max_body_bytes", "2097152");
    assert!(decode_value(&big).is_ok());
    testing::set_setting("max_body_bytes", "100");
    assert!(malformed_message(&fixture_json("beforeShellExecution.json")).contains("over the 100-byte limit"));
}

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

// tool_input (object or string) and outputs may nest 64 levels deep, not 65.
#[test]
fn nesting_is_bounded() {
    let mut body = fixture_json("preToolUse.json");
    body["tool_input"] = nested(MAX_JSON_DEPTH);
    assert!(decode_value(&body).is_ok());
    body["tool_input"] = nested(MAX_JSON_DEPTH + 1);
    assert!(malformed_message(&body).contains("`tool_input` nests deeper than 64 levels"));
    let mut body = fixture_json("beforeMCPExecution.json");
    body["tool_input"] = json!(nested(MAX_JSON_DEPTH + 1).to_string());
    assert!(malformed_message(&body).contains("`tool_input` nests deeper than 64 levels"));
    let mut body = fixture_json("postToolUse.json");
    body["tool_output"] = json!([nested(MAX_JSON_DEPTH)]);
    assert!(malformed_message(&body).contains("`tool output` nests deeper than 64 levels"));
}

// ---- encode ----

fn encode(req: &HttpRequest, v: &Verdict) -> Value {
    let JsonReply { status, content_type, body, .. } = testing::encode_json::<Cursor>(req, v).unwrap();
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    body
}

fn modify(params: Option<&str>) -> Verdict {
    let mut v = testing::verdict(Decision::Modify, "rewritten");
    v.modified_parameters_json = params.map(str::to_owned);
    v
}

fn receipt(mut v: Verdict, id: &str) -> Verdict {
    v.receipt_id = Some(id.into());
    v
}

fn undecided(decision: Decision, reason: &str) -> Verdict {
    let mut v = testing::verdict(decision, reason);
    v.decided = false;
    v
}

fn deny(reason: &str) -> Value {
    json!({"permission": "deny", "user_message": reason, "agent_message": reason})
}

const PERMISSION_EVENTS: &[&str] = &["beforeShellExecution.json", "beforeMCPExecution.json", "preToolUse.json"];

// Shell, MCP and generic tool hooks: allow, deny, ask; DEFER is a deny naming the deferral.
#[test]
fn permission_replies() {
    let v = testing::verdict;
    for name in PERMISSION_EVENTS {
        let req = request(name);
        assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({"permission": "allow"}), "{name}");
        assert_eq!(
            encode(&req, &receipt(v(Decision::Deny, "rm is forbidden"), "r1")),
            deny("rm is forbidden [arbiter receipt r1]"),
            "{name}"
        );
        let r = "needs approval by policy: prod change [arbiter receipt r2]";
        assert_eq!(
            encode(&req, &receipt(v(Decision::StepUp, "needs approval by policy: prod change"), "r2")),
            json!({"permission": "ask", "user_message": r, "agent_message": r}),
            "{name}"
        );
        let held = "needs a ticket; deferral `def-7` waits for that evidence: retry exactly the same action later";
        assert_eq!(encode(&req, &v(Decision::Defer, held)), deny(&format!("deferred: {held}")), "{name}");
        // A hold-mode STEP_UP reaches the plugin as a deny naming the approval.
        let approval = "approval required (prod); approval `apr-1` is pending: once an approver approves it, \
                        retry exactly the same action";
        assert_eq!(encode(&req, &v(Decision::Deny, approval)), deny(approval), "{name}");
        assert_eq!(encode(&req, &v(Decision::Deny, "")), deny("blocked by Arbiter policy"), "{name}");
        assert_eq!(encode(&req, &v(Decision::StepUp, " "))["agent_message"], "approval required by Arbiter policy");
        // Never `{}` on a permission event, even when the host marked nothing decided.
        assert_eq!(encode(&req, &undecided(Decision::Allow, "x")), json!({"permission": "allow"}), "{name}");
    }
}

// MODIFY: updated_input on preToolUse and beforeShellExecution; a deny on MCP; unusable parameters deny.
#[test]
fn modify_replies() {
    let pre = request("preToolUse.json");
    assert_eq!(
        encode(&pre, &modify(Some(r#"{"command":"npm test -- --ci"}"#))),
        json!({"permission": "allow", "updated_input": {"command": "npm test -- --ci"}, "agent_message": "rewritten"})
    );
    let shell = request("beforeShellExecution.json");
    assert_eq!(encode(&shell, &modify(Some(r#"{"command":"ls"}"#)))["updated_input"], json!({"command": "ls"}));
    assert_eq!(
        encode(&shell, &modify(Some(r#"{"cmd":"ls"}"#))),
        deny("the rewrite has no `command` string: rewritten")
    );
    assert_eq!(
        encode(&request("beforeMCPExecution.json"), &receipt(modify(Some(r#"{"repo":"x"}"#)), "r3")),
        deny("Cursor cannot rewrite an MCP call's input, so the call is refused: rewritten [arbiter receipt r3]")
    );
    let mut silent = modify(Some(r#"{"repo":"x"}"#));
    silent.reason = String::new();
    assert_eq!(
        encode(&request("beforeMCPExecution.json"), &silent),
        deny("Cursor cannot rewrite an MCP call's input, so the call is refused: rewritten by Arbiter policy")
    );
    for bad in [None, Some("not json"), Some("[1]"), Some("\"x\"")] {
        for req in [&pre, &shell] {
            assert_eq!(
                encode(req, &modify(bad)),
                deny("modify verdict without usable modified parameters: rewritten"),
                "{bad:?}"
            );
        }
    }
}

// File reads: allow or deny only; STEP_UP and MODIFY are denies that say why.
#[test]
fn read_file_replies() {
    let v = testing::verdict;
    for name in ["beforeReadFile.json", "beforeTabFileRead.json"] {
        let req = request(name);
        assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({"permission": "allow"}));
        assert_eq!(encode(&req, &v(Decision::Deny, "secrets")), deny("secrets"));
        let step_up = encode(&req, &receipt(v(Decision::StepUp, "sensitive file"), "r4"));
        assert_eq!(step_up["permission"], "deny", "{name}: {step_up}");
        let text = step_up["agent_message"].as_str().unwrap();
        assert!(text.starts_with("sensitive file. Cursor cannot ask"), "{text}");
        assert!(text.contains("step_up_hold_events") && text.ends_with("[arbiter receipt r4]"), "{text}");
        // In hold mode the host's deny names the approval.
        let approval = "approval required (sensitive file); approval `apr-9` is pending: once an approver \
                        approves it, retry exactly the same action";
        assert_eq!(encode(&req, &v(Decision::Deny, approval)), deny(approval));
        assert_eq!(
            encode(&req, &modify(Some(r#"{"file_path":"/x"}"#))),
            deny("a file read cannot be rewritten, so it is refused: rewritten")
        );
        assert!(deny("x").get("continue").is_none());
    }
}

// beforeSubmitPrompt: continue true, or false with a user_message when the prompt must not go out.
#[test]
fn prompt_replies() {
    let req = request("beforeSubmitPrompt.json");
    assert_eq!(encode(&req, &undecided(Decision::Allow, "recorded")), json!({"continue": true}));
    assert_eq!(
        encode(&req, &undecided(Decision::Deny, "blocked: the session context could not be recorded")),
        json!({"continue": false, "user_message": "blocked: the session context could not be recorded"})
    );
}

// Observations and lifecycle events are acknowledged with `{}`, whatever the verdict; stop never gets a follow-up.
#[test]
fn non_decision_replies() {
    for name in [
        "afterShellExecution.json",
        "afterMCPExecution.json",
        "afterFileEdit.json",
        "afterTabFileEdit.json",
        "postToolUse.json",
        "postToolUseFailure.json",
        "sessionStart.json",
        "sessionEnd.json",
        "stop.json",
        "afterAgentResponse.json",
        "afterAgentThought.json",
    ] {
        for v in [undecided(Decision::Allow, "recorded"), undecided(Decision::Deny, "context lost")] {
            assert_eq!(encode(&request(name), &v), json!({}), "{name}");
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
    for d in [Decision::Modify, Decision::StepUp, Decision::Defer] {
        let body = encode(&req, &testing::verdict(d, "x"));
        assert_eq!((body["permission"].as_str(), body["continue"].as_bool()), (Some("deny"), Some(false)), "{d:?}");
    }
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
}

// describe: identity, decisions, events, and a blocking reply that parses and blocks tools and prompts.
#[test]
fn describe_plugin() {
    let info = Cursor::describe();
    assert_eq!((info.name.as_str(), info.vendor.as_str()), ("cursor", "Cursor"));
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.decisions, vec![Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp]);
    for e in ["beforeSubmitPrompt", "beforeShellExecution", "beforeMCPExecution", "beforeReadFile", "preToolUse"] {
        assert!(info.events.iter().any(|x| x == e), "{e}");
    }
    let reply = &info.blocking_reply;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({"permission": "deny", "continue": false, "user_message": "{{reason}}", "agent_message": "{{reason}}"})
    );
}
