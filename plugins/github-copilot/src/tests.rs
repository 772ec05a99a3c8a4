//! The adapter against every real Copilot CLI fixture (both dialects), plus
//! malformed input.

use std::path::{Path, PathBuf};

use arbiter_sdk::testing::{self, JsonReply};
use arbiter_sdk::{
    Action, Adapter, Decision, DecodeError, Decoded, Event, HttpRequest, Intent, Lifecycle, Observation, Verdict,
};
use serde_json::{Value, json};

use crate::{BLOCKING_REPLY, GithubCopilot, MAX_JSON_DEPTH, VENDOR_VERSIONS};

const V: &str = "1.0.102";
const SESSION: &str = "852f1658-3726-4b14-a6bd-9a040788c322";
const CWD: &str = "/home/dev/work/cop/proj";

fn fixtures(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/copilot-cli").join(version)
}

/// The request Copilot sends for fixture `name`: camelCase payloads are
/// posted to their event's URL (`camel-preToolUse.json` → `/preToolUse`),
/// VS Code-format ones to the integration's base URL.
fn request(name: &str) -> HttpRequest {
    let mut req = testing::fixture_request(fixtures(V).join(name)).unwrap();
    if let Some(event) = name.strip_prefix("camel-").and_then(|n| n.strip_suffix(".json")) {
        req.path = format!("/{event}");
    }
    req
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures(V).join(name)).unwrap()).unwrap()
}

fn routed(path: &str, body: &Value) -> HttpRequest {
    let mut req = testing::json_request(body.to_string());
    req.path = path.to_owned();
    req
}

fn decode_at(path: &str, body: &Value) -> Result<Decoded, DecodeError> {
    GithubCopilot::decode(&routed(path, body))
}

fn malformed_message(path: &str, body: &Value) -> String {
    match decode_at(path, body) {
        Err(DecodeError::Malformed(m)) => m,
        other => panic!("expected malformed, got {other:?}"),
    }
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn bash(params: Value, original: &str, event: &str) -> Event {
    Event::Action(Action {
        tool: "shell".into(),
        operation: "exec".into(),
        parameters_json: params.to_string(),
        resource: None,
        original_tool: original.into(),
        event_kind: event.into(),
        call_id: None,
    })
}

fn greeting() -> Value {
    json!({"command": "echo hello-from-mock", "description": "print greeting"})
}

/// The canonical event each 1.0.102 fixture must decode to, or `Err` with
/// the text of the malformed error it must be refused with.
fn expected(name: &str) -> Result<Event, &'static str> {
    let shell_result = "hello-from-mock\n<shellId: 0 completed with exit code 0>";
    Ok(match name {
        "camel-preToolUse.json" => bash(greeting(), "bash", "preToolUse"),
        "camel-permissionRequest.json" => bash(json!({"command": "echo hello-from-mock"}), "bash", "permissionRequest"),
        "camel-postToolUse.json" => Event::Observation(Observation {
            original_tool: "bash".into(),
            tool: "shell".into(),
            operation: "exec".into(),
            output_json: json!({"resultType": "success", "textResultForLlm": shell_result}).to_string(),
            event_kind: "postToolUse".into(),
            call_id: None,
        }),
        "camel-userPromptSubmitted.json" => {
            Event::Intent(Intent { text: "run the greeting".into(), event_kind: "userPromptSubmitted".into() })
        }
        "camel-sessionStart.json" => Event::SessionStart(Lifecycle {
            event_kind: "sessionStart".into(),
            detail_json: json!({"source": "new", "initialPrompt": "run the greeting"}).to_string(),
        }),
        "camel-sessionEnd.json" => Event::SessionEnd(Lifecycle {
            event_kind: "sessionEnd".into(),
            detail_json: json!({"reason": "complete"}).to_string(),
        }),
        "camel-agentStop.json" => Event::Other(Lifecycle {
            event_kind: "agentStop".into(),
            detail_json: json!({"stopReason": "end_turn", "stop_hook_active": false}).to_string(),
        }),
        "pascal-PreToolUse.json" => bash(greeting(), "Bash", "PreToolUse"),
        "pascal-PostToolUse.json" => Event::Observation(Observation {
            original_tool: "Bash".into(),
            tool: "shell".into(),
            operation: "exec".into(),
            output_json: json!({"result_type": "success", "text_result_for_llm": shell_result}).to_string(),
            event_kind: "PostToolUse".into(),
            call_id: None,
        }),
        "pascal-UserPromptSubmit.json" => {
            Event::Intent(Intent { text: "run the greeting".into(), event_kind: "UserPromptSubmit".into() })
        }
        "pascal-SessionStart.json" => Event::SessionStart(Lifecycle {
            event_kind: "SessionStart".into(),
            detail_json: json!({"source": "new", "initial_prompt": "run the greeting"}).to_string(),
        }),
        "pascal-SessionEnd.json" => Event::SessionEnd(Lifecycle {
            event_kind: "SessionEnd".into(),
            detail_json: json!({"reason": "complete"}).to_string(),
        }),
        "pascal-Stop.json" => Event::Other(Lifecycle {
            event_kind: "Stop".into(),
            detail_json: json!({"stop_reason": "end_turn", "stop_hook_active": false}).to_string(),
        }),
        // Not a hook body: the headers Copilot sent with one.
        "http-hook-request-headers.json" => return Err("the request names no event"),
        other => panic!("fixture {other} has no expectation: add one"),
    })
}

// Every fixture of every tested version decodes to exactly the expected event.
#[test]
fn every_fixture_maps_exactly() {
    assert_eq!(VENDOR_VERSIONS, &[V]);
    let paths = testing::fixture_paths(fixtures(V)).unwrap();
    assert_eq!(paths.len(), 14, "fixtures missing: {paths:?}");
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        let result = GithubCopilot::decode(&request(name));
        match expected(name) {
            Ok(event) => {
                let decoded = result.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(decoded.events, vec![event], "{name}");
                assert_eq!(decoded.requester.session, SESSION, "{name}");
                assert_eq!(decoded.requester.agent.as_deref(), Some("github-copilot"), "{name}");
                assert_eq!(decoded.requester.service.as_deref(), Some("github-copilot"), "{name}");
                let format = if name.starts_with("camel-") { "camelCase" } else { "vscode" };
                assert_eq!(json_of(&decoded.requester.attributes_json)["payload_format"], format, "{name}");
            }
            Err(needle) => match result {
                Err(DecodeError::Malformed(m)) => assert!(m.contains(needle), "{name}: {m}"),
                other => panic!("{name}: expected malformed, got {other:?}"),
            },
        }
    }
}

// The requester: settings, cwd, transcript, payload format and the client's user agent.
#[test]
fn requester_from_headers_and_settings() {
    testing::set_setting("human", "carol@example.com");
    testing::set_setting("roles", "deployer");
    let headers = fixture_json("http-hook-request-headers.json");
    let mut req = request("camel-agentStop.json");
    // The host removes the credential headers before the plugin sees them.
    req.headers = headers
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "authorization")
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let r = GithubCopilot::decode(&req).unwrap().requester;
    assert_eq!(r.human.as_deref(), Some("carol@example.com"));
    assert_eq!(r.roles, vec!["deployer".to_owned()]);
    assert_eq!(
        json_of(&r.attributes_json),
        json!({"cwd": CWD,
               "transcript_path": format!("/home/dev/work/cop/home/.copilot/session-state/{SESSION}/events.jsonl"),
               "payload_format": "camelCase",
               "user_agent": "copilot/1.0.102 (linux v24.20.0) term/unknown"})
    );
}

// The event comes from the URL, the body, or both when they agree.
#[test]
fn event_routing() {
    // VS Code-format payloads may also be posted to their event's URL.
    assert!(decode_at("/PreToolUse", &fixture_json("pascal-PreToolUse.json")).is_ok());
    assert!(decode_at("/preToolUse", &fixture_json("pascal-PreToolUse.json")).is_ok());
    assert!(decode_at("/agentStop", &fixture_json("pascal-Stop.json")).is_ok());
    assert!(decode_at("/permissionRequest", &fixture_json("camel-permissionRequest.json")).is_ok());
    assert!(decode_at("", &fixture_json("camel-permissionRequest.json")).is_ok(), "hookName names it");
    // A camelCase payload without its URL names no event.
    let m = malformed_message("", &fixture_json("camel-preToolUse.json"));
    assert!(m.contains("give each event its own URL, /v1/hooks/<integration>/<event>"), "{m}");
    // The URL and the body must agree.
    let m = malformed_message("/postToolUse", &fixture_json("pascal-PreToolUse.json"));
    assert!(m.contains("the URL names event `postToolUse` but the body is a `PreToolUse`"), "{m}");
    assert!(malformed_message("/preToolUse", &fixture_json("camel-permissionRequest.json")).contains("URL names"));
    assert!(malformed_message("/pre tool", &fixture_json("camel-preToolUse.json")).contains("is not an event name"));
    assert!(malformed_message("/a/b", &fixture_json("camel-preToolUse.json")).contains("is not an event name"));
    // The same camelCase body at another event's URL is that event.
    let decoded = decode_at(
        "/postToolUseFailure",
        &json!({"sessionId": "s", "toolName": "bash",
        "toolArgs": {"command": "false"}, "error": "exit 1"}),
    )
    .unwrap();
    assert_eq!(
        decoded.events,
        vec![Event::Observation(Observation {
            original_tool: "bash".into(),
            tool: "shell".into(),
            operation: "exec".into(),
            output_json: json!("exit 1").to_string(),
            event_kind: "postToolUseFailure".into(),
            call_id: None,
        })]
    );
    // An event the adapter does not know is recorded as `other`.
    let decoded = decode_at("/someFutureEvent", &json!({"sessionId": "s", "x": 1})).unwrap();
    assert_eq!(
        decoded.events,
        vec![Event::Other(Lifecycle {
            event_kind: "someFutureEvent".into(),
            detail_json: json!({"x": 1}).to_string()
        })]
    );
    // `notification` names itself but keeps camelCase fields.
    let decoded = decode_at(
        "/notification",
        &json!({"sessionId": "s", "hook_event_name": "Notification",
        "message": "m", "notification_type": "permission_prompt"}),
    )
    .unwrap();
    assert_eq!(decoded.requester.session, "s");
    assert!(matches!(&decoded.events[..], [Event::Other(l)] if l.event_kind == "Notification"));
}

fn pre_tool_use(name: &str, args: Value) -> Vec<Action> {
    let body = json!({"sessionId": SESSION, "timestamp": 1, "cwd": CWD, "toolName": name, "toolArgs": args});
    decode_at("/preToolUse", &body)
        .unwrap()
        .events
        .into_iter()
        .map(|e| match e {
            Event::Action(a) => a,
            other => panic!("{name}: expected an action, got {other:?}"),
        })
        .collect()
}

// Runtime and Claude tool names map to canonical tools and targets.
#[test]
fn tool_mapping() {
    testing::set_setting("mcp_servers", "my, my-server");
    let patch = "*** Begin Patch\n*** Update File: a.rs\n*** Add File: /etc/x\n*** End Patch";
    let cases: &[(&str, Value, &str, &str, &[&str])] = &[
        ("bash", json!({"command": "ls"}), "shell", "exec", &[]),
        ("powershell", json!({"command": "dir"}), "shell", "exec", &[]),
        ("Bash", json!({"command": "ls"}), "shell", "exec", &[]),
        ("view", json!({"path": "/etc/hosts"}), "file", "read", &["/etc/hosts"]),
        ("Read", json!({"file_path": "src/x.rs"}), "file", "read", &["/home/dev/work/cop/proj/src/x.rs"]),
        ("create", json!({"path": "n.txt", "file_text": "x"}), "file", "write", &["/home/dev/work/cop/proj/n.txt"]),
        ("Write", json!({"file_path": "/tmp/w"}), "file", "write", &["/tmp/w"]),
        ("edit", json!({"path": "/a", "old_str": "x", "new_str": "y"}), "file", "write", &["/a"]),
        ("str_replace_editor", json!({"command": "view", "path": "/b"}), "file", "read", &["/b"]),
        ("str_replace_editor", json!({"command": "create", "path": "/b"}), "file", "write", &["/b"]),
        ("apply_patch", json!({ "input": patch }), "file", "write", &["/home/dev/work/cop/proj/a.rs", "/etc/x"]),
        ("Edit", json!({ "input": patch }), "file", "write", &["/home/dev/work/cop/proj/a.rs", "/etc/x"]),
        ("grep", json!({"pattern": "x", "path": "/srv"}), "file", "read", &["/srv"]),
        ("glob", json!({"pattern": "**/*"}), "file", "read", &[]),
        ("web_fetch", json!({"url": "https://example.com"}), "network", "egress", &["https://example.com"]),
        ("WebFetch", json!({"url": "https://example.com"}), "network", "egress", &["https://example.com"]),
        ("web_search", json!({"query": "q"}), "network", "egress", &[]),
        ("github-mcp-server-list_issues", json!({}), "mcp", "call", &["mcp://github-mcp-server/list_issues"]),
        ("my-server-list_items", json!({}), "mcp", "call", &["mcp://my-server/list_items"]),
        ("my-tool", json!({}), "mcp", "call", &["mcp://my/tool"]),
        ("mcp__db__query", json!({}), "mcp", "call", &["mcp://db/query"]),
        ("other-server-x", json!({}), "other-server-x", "call", &[]),
        ("task", json!({"prompt": "p"}), "task", "call", &[]),
        ("report_intent", json!({"intent": "x"}), "report_intent", "call", &[]),
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
        }
    }
}

// toolArgs may be an object, a string holding one, or absent.
#[test]
fn tool_args_shapes() {
    let body = |args: Value| json!({"sessionId": "s", "toolName": "bash", "toolArgs": args});
    let from_string = decode_at("/preToolUse", &body(json!(r#"{"command":"ls"}"#))).unwrap();
    let Event::Action(a) = &from_string.events[0] else { panic!() };
    assert_eq!(a.parameters_json, json!({"command": "ls"}).to_string());
    let absent = decode_at("/preToolUse", &json!({"sessionId": "s", "toolName": "list_bash"})).unwrap();
    let Event::Action(a) = &absent.events[0] else { panic!() };
    assert_eq!(a.parameters_json, "{}");
    assert!(malformed_message("/preToolUse", &body(json!("ls -la"))).contains("`toolArgs` is a string that does not"));
    assert!(malformed_message("/preToolUse", &body(json!([1]))).contains("`toolArgs` is not a JSON object"));
    assert!(malformed_message("/preToolUse", &body(json!("[1]"))).contains("`toolArgs` is not a JSON object"));
}

// Malformed bodies are refused with a message that names the problem.
#[test]
fn malformed_inputs() {
    let camel = fixture_json("camel-preToolUse.json");
    let pascal = fixture_json("pascal-PreToolUse.json");
    let edit = |base: &Value, key: &str, v: Option<Value>| {
        let mut b = base.clone();
        match v {
            Some(v) => b[key] = v,
            None => {
                b.as_object_mut().unwrap().remove(key);
            }
        }
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/preToolUse", json!([1]), "body is not a JSON object"),
        ("/preToolUse", edit(&camel, "sessionId", None), "missing `sessionId`"),
        ("/preToolUse", edit(&camel, "sessionId", Some(json!(""))), "the session id is empty"),
        ("/preToolUse", edit(&camel, "sessionId", Some(json!("s".repeat(257)))), "`session id` is 257 bytes"),
        ("/preToolUse", edit(&camel, "toolName", None), "missing `toolName`"),
        ("/preToolUse", edit(&camel, "toolName", Some(json!(""))), "`toolName` is empty"),
        ("/preToolUse", edit(&camel, "toolName", Some(json!("!!!"))), "tool name `!!!` has no letter or digit"),
        ("/preToolUse", edit(&camel, "cwd", Some(json!(1))), "`cwd` is not a string"),
        ("", edit(&pascal, "session_id", None), "missing `session_id`"),
        ("", edit(&pascal, "hook_event_name", Some(json!(7))), "`hook_event_name` is not a string"),
        ("", edit(&pascal, "hook_event_name", Some(json!("Pre-Tool"))), "`Pre-Tool` is not an event name"),
        ("", edit(&pascal, "tool_name", None), "missing `tool_name`"),
        ("", edit(&pascal, "tool_input", Some(json!(3))), "`tool_input` is not a JSON object"),
        (
            "",
            edit(&pascal, "tool_input", Some(json!({"file_path": format!("/{}", "a".repeat(4096))}))).tap("Read"),
            "`resource` is 4097 bytes",
        ),
        ("/userPromptSubmitted", json!({"sessionId": "s"}), "missing `prompt`"),
        ("/postToolUse", json!({"sessionId": "s", "toolResult": {}}), "missing `toolName`"),
    ];
    for (path, body, needle) in cases {
        let m = malformed_message(path, &body);
        assert!(m.contains(needle), "{path} {body}: `{m}` lacks `{needle}`");
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
    for body in [&b"not json"[..], b"", b"{\"sessionId\": \"s\",", b"\xff\xfe"] {
        let mut req = testing::json_request(body);
        req.path = "/preToolUse".into();
        match GithubCopilot::decode(&req) {
            Err(DecodeError::Malformed(m)) => assert!(m.starts_with("body is not valid JSON"), "{m}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let big = json!({"sessionId": "s", "prompt": "a".repeat(crate::DEFAULT_MAX_BODY_BYTES)});
    assert!(malformed_message("/userPromptSubmitted", &big).contains("over the 1048576-byte limit"));
    testing::set_setting("max_body_bytes", "2097152");
    assert!(decode_at("/userPromptSubmitted", &big).is_ok());
}

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

// Tool arguments (also inside a string) and results may nest 64 levels deep, not 65.
#[test]
fn nesting_is_bounded() {
    assert_eq!(pre_tool_use("bash", nested(MAX_JSON_DEPTH)).len(), 1);
    let mut body = fixture_json("camel-preToolUse.json");
    body["toolArgs"] = nested(MAX_JSON_DEPTH + 1);
    assert!(malformed_message("/preToolUse", &body).contains("`toolArgs` nests deeper than 64 levels"));
    body["toolArgs"] = json!(nested(MAX_JSON_DEPTH + 1).to_string());
    assert!(malformed_message("/preToolUse", &body).contains("`toolArgs` nests deeper than 64 levels"));
    let mut body = fixture_json("camel-postToolUse.json");
    body["toolResult"] = json!([nested(MAX_JSON_DEPTH)]);
    assert!(malformed_message("/postToolUse", &body).contains("`toolResult` nests deeper than 64 levels"));
}

// ---- encode ----

fn encode(req: &HttpRequest, v: &Verdict) -> Value {
    let JsonReply { status, content_type, body, .. } = testing::encode_json::<GithubCopilot>(req, v).unwrap();
    assert_eq!(status, 200, "Copilot turns a 5xx into a deny and ignores the body");
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

fn pd(decision: &str, reason: &str) -> Value {
    json!({"permissionDecision": decision, "permissionDecisionReason": reason})
}

// preToolUse (both dialects): each decision, with STEP_UP and DEFER denied headless.
#[test]
fn pre_tool_use_replies() {
    for name in ["camel-preToolUse.json", "pascal-PreToolUse.json"] {
        let req = request(name);
        let v = testing::verdict;
        assert_eq!(encode(&req, &v(Decision::Allow, "ok")), pd("allow", "ok"), "{name}");
        assert_eq!(encode(&req, &receipt(v(Decision::Deny, "no"), "r1")), pd("deny", "no [arbiter receipt r1]"));
        assert_eq!(
            encode(&req, &v(Decision::StepUp, "prod change")),
            pd(
                "deny",
                "approval required: prod change. The action did not run; it awaits approval: retry exactly the \
                 same action once it is approved"
            )
        );
        assert_eq!(
            encode(&req, &v(Decision::Defer, "needs a ticket")),
            pd(
                "deny",
                "deferred: needs a ticket. The action did not run; it awaits evidence: retry exactly the same \
                 action later"
            )
        );
    }
}

// With a human at the console, STEP_UP is Copilot's own `ask`; DEFER still denies.
#[test]
fn interactive_step_up_asks() {
    testing::set_setting("interactive", "true");
    let req = request("camel-preToolUse.json");
    assert_eq!(
        encode(&req, &receipt(testing::verdict(Decision::StepUp, "prod change"), "r5")),
        pd("ask", "prod change [arbiter receipt r5]")
    );
    assert_eq!(encode(&req, &testing::verdict(Decision::StepUp, "")), pd("ask", "Arbiter policy requires approval"));
    assert_eq!(encode(&req, &testing::verdict(Decision::Defer, "x"))["permissionDecision"], "deny");
    // permissionRequest falls through to Copilot's own prompt.
    assert_eq!(encode(&request("camel-permissionRequest.json"), &testing::verdict(Decision::StepUp, "x")), json!({}));
}

// `allow_reply = "neutral"` answers an allow with `{}`; blocks are unchanged.
#[test]
fn neutral_allow_reply() {
    testing::set_setting("allow_reply", "neutral");
    let req = request("camel-preToolUse.json");
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
    assert_eq!(encode(&req, &testing::verdict(Decision::Deny, "no")), pd("deny", "no"));
}

// MODIFY: an allow with the full rewritten arguments; unusable parameters deny.
#[test]
fn pre_tool_use_modify() {
    let req = request("pascal-PreToolUse.json");
    let params = r#"{"command":"echo safe","description":"print greeting"}"#;
    assert_eq!(
        encode(&req, &modify(Some(params))),
        json!({"permissionDecision": "allow", "permissionDecisionReason": "rewritten", "modifiedArgs": json_of(params)})
    );
    for bad in [None, Some("{"), Some("[]")] {
        assert_eq!(
            encode(&req, &modify(bad)),
            pd("deny", "modify verdict without usable modified parameters: rewritten"),
            "{bad:?}"
        );
    }
}

// permissionRequest: allow stays neutral unless the integration opts in; blocks deny with a message.
#[test]
fn permission_request_replies() {
    let req = request("camel-permissionRequest.json");
    let v = testing::verdict;
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({}));
    testing::set_setting("approve_permission_requests", "true");
    assert_eq!(encode(&req, &v(Decision::Allow, "ok")), json!({"behavior": "allow"}));
    testing::clear_settings();
    assert_eq!(encode(&req, &v(Decision::Deny, "no")), json!({"behavior": "deny", "message": "no"}));
    assert_eq!(encode(&req, &v(Decision::Defer, "x"))["behavior"], "deny");
    assert_eq!(encode(&req, &v(Decision::StepUp, "x"))["behavior"], "deny");
    assert_eq!(
        encode(&req, &modify(Some("{}"))),
        json!({"behavior": "deny", "message":
            "the rewrite cannot be applied to a permissionRequest (use the preToolUse hook): rewritten"})
    );
}

// Non-decision events get `{}`, blocking verdicts included (Copilot drops prompt-hook output).
#[test]
fn non_decision_replies() {
    for name in [
        "camel-userPromptSubmitted.json",
        "camel-postToolUse.json",
        "camel-sessionStart.json",
        "camel-sessionEnd.json",
        "camel-agentStop.json",
        "pascal-UserPromptSubmit.json",
        "pascal-PostToolUse.json",
        "pascal-SessionStart.json",
        "pascal-SessionEnd.json",
        "pascal-Stop.json",
    ] {
        let req = request(name);
        assert_eq!(encode(&req, &undecided(Decision::Allow, "recorded")), json!({}), "{name}");
        assert_eq!(encode(&req, &undecided(Decision::Deny, "store down")), json!({}), "{name}");
    }
    // A deny still blocks a tool call even if the host did not mark it decided.
    assert_eq!(encode(&request("camel-preToolUse.json"), &undecided(Decision::Deny, "no")), pd("deny", "no"));
}

fn has_value(v: &Value, needle: &str) -> bool {
    match v {
        Value::String(s) => s == needle,
        Value::Array(a) => a.iter().any(|x| has_value(x, needle)),
        Value::Object(m) => m.values().any(|x| has_value(x, needle)),
        _ => false,
    }
}

// Without `interactive = "true"`, `ask` is never sent.
#[test]
fn never_asks_headless() {
    let mut reqs: Vec<HttpRequest> = testing::fixture_paths(fixtures(V))
        .unwrap()
        .iter()
        .map(|p| request(p.file_name().unwrap().to_str().unwrap()))
        .collect();
    reqs.push(testing::json_request("not json"));
    for interactive in ["false", "yes", ""] {
        testing::set_setting("interactive", interactive);
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
}

// A body that no longer parses gets the blocking shape unless the verdict is a plain allow.
#[test]
fn unreadable_request_replies() {
    let req = testing::json_request("not json");
    assert_eq!(
        encode(&req, &testing::verdict(Decision::Deny, "why")),
        json_of(&BLOCKING_REPLY.replace("{{reason}}", "why"))
    );
    assert_eq!(encode(&req, &modify(Some("{}")))["permissionDecision"], "deny");
    assert_eq!(encode(&req, &testing::verdict(Decision::Allow, "ok")), json!({}));
    // A camelCase body that lost its URL cannot be told apart either.
    let lost = testing::fixture_request(fixtures(V).join("camel-preToolUse.json")).unwrap();
    assert_eq!(encode(&lost, &testing::verdict(Decision::Deny, "x"))["behavior"], "deny");
}

// describe: identity, decisions, events, and a blocking reply that parses and blocks both decision events.
#[test]
fn describe_plugin() {
    let info = GithubCopilot::describe();
    assert_eq!(info.name, "github-copilot");
    assert_eq!(info.vendor_versions, vec!["1.0.102".to_owned()]);
    assert_eq!(info.decisions, vec![Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp]);
    for e in ["preToolUse", "PreToolUse", "permissionRequest", "postToolUse", "userPromptSubmitted", "agentStop"] {
        assert!(info.events.iter().any(|x| x == e), "{e}");
    }
    let reply = &info.blocking_reply;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        body,
        json!({"permissionDecision": "deny", "permissionDecisionReason": "{{reason}}",
               "behavior": "deny", "message": "{{reason}}"})
    );
}
