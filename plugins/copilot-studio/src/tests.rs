//! The adapter against every Copilot Studio fixture, plus malformed input.

use std::path::{Path, PathBuf};

use arbiter_sdk::testing::{self, JsonReply};
use arbiter_sdk::{Action, Adapter, Decision, DecodeError, Decoded, Event, HttpRequest, Intent, Observation, Verdict};
use serde_json::{Value, json};

use crate::{
    BLOCKING_REPLY, CopilotStudio, DEFAULT_MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_OBSERVATIONS, MAX_THOUGHT_CHARS,
    PATH_ANALYZE, PATH_VALIDATE, REASON_DEFER, REASON_DENY, REASON_FAULT, REASON_MODIFY_UNSUPPORTED, REASON_STEP_UP,
    VALIDATE_SESSION, canonical_tool,
};

const VERSION: &str = "2025-05-01";
const CORRELATION: &str = "5f0c3a9e-1d2b-4c8e-9f7a-6b5d4c3b2a10";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/copilot-studio").join(VERSION)
}

/// The request Copilot Studio sends to `path`, as the host hands it over:
/// query string and Authorization removed, correlation id kept.
fn request_to(path: &str, body: impl Into<Vec<u8>>) -> HttpRequest {
    let mut req = testing::json_request(body);
    req.path = path.to_owned();
    req.headers.push(("x-ms-correlation-id".to_owned(), CORRELATION.to_owned()));
    req
}

/// A fixture as a request to the endpoint its name says.
fn fixture_request(name: &str) -> HttpRequest {
    let body = std::fs::read(fixtures().join(name)).unwrap();
    let path = if name.starts_with("validate-") { PATH_VALIDATE } else { PATH_ANALYZE };
    request_to(path, body)
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap()
}

fn decode_value(body: &Value) -> Result<Decoded, DecodeError> {
    CopilotStudio::decode(&request_to(PATH_ANALYZE, body.to_string()))
}

fn malformed_message(body: &Value) -> String {
    match decode_value(body) {
        Err(DecodeError::Malformed(m)) => m,
        other => panic!("expected malformed, got {other:?}"),
    }
}

fn action_of(decoded: &Decoded) -> &Action {
    let actions: Vec<&Action> = decoded
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Action(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(actions.len(), 1, "{decoded:?}");
    actions[0]
}

fn observations_of(decoded: &Decoded) -> Vec<&Observation> {
    decoded
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Observation(o) => Some(o),
            _ => None,
        })
        .collect()
}

fn attributes(decoded: &Decoded) -> Value {
    serde_json::from_str(&decoded.requester.attributes_json).unwrap()
}

fn email() -> Value {
    fixture_json("analyze-send-email.json")
}

// ---- decode: fixtures ----

/// The events each fixture must decode to.
fn expected_events(name: &str) -> Vec<Event> {
    let intent = |text: &str| Event::Intent(Intent { text: text.into(), event_kind: "userMessage".into() });
    let observation = |original: &str, tool: &str, output: Value| {
        Event::Observation(Observation {
            original_tool: original.into(),
            tool: tool.into(),
            operation: "call".into(),
            output_json: output.to_string(),
            event_kind: "previousToolOutput".into(),
            call_id: None,
        })
    };
    match name {
        "analyze-send-email.json" => vec![
            intent("use the send email tool"),
            Event::Action(Action {
                tool: "sendemail".into(),
                operation: "call".into(),
                parameters_json: json!({"to": "test@example.com", "subject": "Test Email",
                    "body": "This is a test email sent from the otp_demo agent."})
                .to_string(),
                resource: Some("test@example.com".into()),
                original_tool: "cra65_otpdemo.action.SendEmail-SendEmail".into(),
                event_kind: "analyzeToolExecution".into(),
                call_id: Some("d4ac718e-2f3b-4c5d-8e9f-0a1b2c3d4e5f".into()),
            }),
        ],
        "analyze-previousToolOutputs-array.json" => vec![
            intent("Look up the forecast for Seattle and email it to alice@contoso.com"),
            observation(
                "cra65_weather.action.MSNWeather-Getforecastfortoday",
                "msnweather",
                json!([
                    {"name": "summary", "description": null, "type": null, "value": "Light rain"},
                    {"name": "highTemperature", "description": null, "type": null, "value": 14}
                ]),
            ),
            observation(
                "cra65_weather.action.Office365Users-MyProfile",
                "office365users",
                json!({"displayName": "Bob Example", "mail": "bob@contoso.com"}),
            ),
            Event::Action(Action {
                tool: "office365outlook".into(),
                operation: "call".into(),
                parameters_json: json!({"To": "alice@contoso.com", "Subject": "Seattle forecast",
                    "Body": "Light rain, high of 14 C."})
                .to_string(),
                resource: Some("alice@contoso.com".into()),
                original_tool: "cra65_weather.action.Office365Outlook-SendanemailV2".into(),
                event_kind: "analyzeToolExecution".into(),
                call_id: Some("6e7f8a9b-0c1d-4e2f-3a4b-5c6d7e8f9a0b".into()),
            }),
        ],
        "analyze-multiturn.json" => vec![
            // The current message, not the older turns of chatHistory.
            intent("execute the tool again"),
            observation(
                "cra65_otpdemo.action.ExcelOnlineBusiness-Listtables",
                "excelonlinebusiness",
                json!([{"name": "value", "description": null, "type": null,
                        "value": [{"name": "Table1"}, {"name": "Expenses"}]}]),
            ),
            Event::Action(Action {
                tool: "excelonlinebusiness".into(),
                operation: "call".into(),
                parameters_json: json!({"source": "locationG", "Range": "table_rangeG", "file": "fileG",
                    "drive": "doc_libG"})
                .to_string(),
                resource: Some("fileG".into()),
                original_tool: "cra65_otpdemo.action.ExcelOnlineBusiness-Createtable".into(),
                event_kind: "analyzeToolExecution".into(),
                // planStepId is null in this capture.
                call_id: None,
            }),
        ],
        "validate-empty.json" => Vec::new(),
        other => panic!("fixture {other} has no expectation: add one"),
    }
}

// Every fixture decodes to exactly the expected events.
#[test]
fn every_fixture_maps_exactly() {
    let paths = testing::fixture_paths(fixtures()).unwrap();
    assert_eq!(paths.len(), 4, "fixtures: {paths:?}");
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        let decoded = CopilotStudio::decode(&fixture_request(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded.events, expected_events(name), "{name}");
        assert_eq!(decoded.requester.service.as_deref(), Some("copilot-studio"), "{name}");
        assert!(decoded.requester.delegation_chain.is_empty() && decoded.requester.scope.is_empty(), "{name}");
        if name.starts_with("analyze-") {
            let body = fixture_json(name);
            let meta = &body["conversationMetadata"];
            assert_eq!(decoded.requester.session, meta["conversationId"].as_str().unwrap(), "{name}");
            assert_eq!(decoded.requester.agent.as_deref(), meta["agent"]["name"].as_str(), "{name}");
            assert_eq!(decoded.requester.human.as_deref(), meta["user"]["id"].as_str(), "{name}");
            assert_eq!(attributes(&decoded)["correlationId"], CORRELATION, "{name}");
        }
    }
}

// The requester of the real capture carries exactly its vendor facts.
#[test]
fn requester_from_send_email() {
    let decoded = CopilotStudio::decode(&fixture_request("analyze-send-email.json")).unwrap();
    let r = &decoded.requester;
    assert_eq!(r.session, "a3f1c2d4-8e7b-4f6a-9c5d-2b1e0f9a8d7c");
    assert_eq!(r.agent.as_deref(), Some("otp_demo"));
    assert_eq!(r.human.as_deref(), Some("4c9f97d9-375a-4fe2-8ae5-6c4fb08043ff"));
    assert!(r.roles.is_empty());
    assert_eq!(
        attributes(&decoded),
        json!({
            "tenantId": "98e2f7d2-c1d3-4410-b87f-2396f157975f",
            "environmentId": "Default-98e2f7d2-c1d3-4410-b87f-2396f157975f",
            "agentId": "5be3e14e-2e46-f111-bec6-7c1e52344333",
            "agentName": "otp_demo",
            "channelId": "pva-studio",
            "planId": "833de742-6c1f-4b8e-a2d9-5e7f3c0b1a96",
            "planStepId": "d4ac718e-2f3b-4c5d-8e9f-0a1b2c3d4e5f",
            "incomingClientIp": "2001:db8::17",
            "toolName": "Send-an-Email",
            "toolType": "ToolDefinition",
            "thought": "This action needs to be done to send an email to the recipient as requested by the user.",
            "isPublished": false,
            "correlationId": CORRELATION,
        })
    );
}

// Other fixtures: the facts that differ (published agent, Teams channel, message id).
#[test]
fn requester_from_other_fixtures() {
    let decoded = CopilotStudio::decode(&fixture_request("analyze-previousToolOutputs-array.json")).unwrap();
    let attrs = attributes(&decoded);
    assert_eq!(attrs["channelId"], "msteams");
    assert_eq!(attrs["messageId"], "msg-0001");
    assert_eq!(attrs["isPublished"], true);
    assert_eq!(attrs["tenantId"], "11111111-2222-3333-4444-555555555555");
    assert!(attrs.get("incomingClientIp").is_none());
    let decoded = CopilotStudio::decode(&fixture_request("analyze-multiturn.json")).unwrap();
    let attrs = attributes(&decoded);
    assert!(attrs.get("planStepId").is_none(), "null planStepId is not an attribute");
    assert_eq!(attrs["planId"], "6fbb84c7-b50b-4090-8a97-134afbd16c51");
    assert_eq!(attrs["incomingClientIp"], "::ffff:78.131.11.108");
}

// Fallbacks: planId names the session, the agent id the agent, the user's
// tenant the tenant, the `human` setting the human; `roles` are read.
#[test]
fn requester_fallbacks() {
    testing::set_setting("human", "alice@contoso.com");
    testing::set_setting("roles", " sales, ,support ");
    let mut body = email();
    let meta = body["conversationMetadata"].as_object_mut().unwrap();
    meta.remove("conversationId");
    meta["agent"].as_object_mut().unwrap().remove("name");
    meta["agent"].as_object_mut().unwrap().remove("tenantId");
    meta["user"]["tenantId"] = json!("user-tenant");
    meta["user"]["id"] = json!(null);
    meta["trigger"] = json!({"id": "trg-1", "schemaName": "cra65_otpdemo.trigger.OnEmail"});
    let decoded = decode_value(&body).unwrap();
    let r = &decoded.requester;
    assert_eq!(r.session, "833de742-6c1f-4b8e-a2d9-5e7f3c0b1a96");
    assert_eq!(r.agent.as_deref(), Some("5be3e14e-2e46-f111-bec6-7c1e52344333"));
    assert_eq!(r.human.as_deref(), Some("alice@contoso.com"));
    assert_eq!(r.roles, vec!["sales".to_owned(), "support".to_owned()]);
    let attrs = attributes(&decoded);
    assert_eq!(attrs["tenantId"], "user-tenant");
    assert_eq!(attrs["triggerId"], "trg-1");
    assert_eq!(attrs["triggerSchemaName"], "cra65_otpdemo.trigger.OnEmail");
    assert!(attrs.get("agentName").is_none());
    // No user, no agent: no human (without the setting), no agent.
    testing::clear_settings();
    let mut body = email();
    body["conversationMetadata"].as_object_mut().unwrap().remove("user");
    body["conversationMetadata"]["agent"] = json!(null);
    let decoded = decode_value(&body).unwrap();
    assert_eq!(decoded.requester.human, None);
    assert_eq!(decoded.requester.agent, None);
    assert!(decoded.requester.roles.is_empty());
}

// The thought is kept cut to 1024 characters; an empty one is dropped.
#[test]
fn thought_is_bounded() {
    let mut body = email();
    body["plannerContext"]["thought"] = json!("é".repeat(MAX_THOUGHT_CHARS + 10));
    let thought = attributes(&decode_value(&body).unwrap())["thought"].as_str().unwrap().to_owned();
    assert_eq!(thought, format!("{}...", "é".repeat(MAX_THOUGHT_CHARS)));
    body["plannerContext"]["thought"] = json!("");
    assert!(attributes(&decode_value(&body).unwrap()).get("thought").is_none());
}

// Without a userMessage there is no intent; the action is still decoded.
#[test]
fn no_user_message_no_intent() {
    for message in [json!(null), json!("")] {
        let mut body = email();
        body["plannerContext"]["userMessage"] = message;
        let decoded = decode_value(&body).unwrap();
        assert_eq!(decoded.events.len(), 1);
        assert!(matches!(decoded.events[0], Event::Action(_)));
    }
}

// ---- decode: mapping ----

// The tool-id rule: connector of `<prefix>.action.<Connector>-<Operation>`, else the whole id.
#[test]
fn tool_mapping_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("cra65_otpdemo.action.SendEmail-SendEmail", Some("sendemail")),
        ("cra65_otpdemo.action.ExcelOnlineBusiness-Createtable", Some("excelonlinebusiness")),
        ("cra65_financialInsights.action.Addarowintoatable", Some("addarowintoatable")),
        ("cra65_financialInsights.action.WorkIQCopilot(Preview)", Some("workiqcopilot_preview")),
        (
            "pub_UnderwriterCopilot.action.UnderwriterCopilotTools-UnderwriterCopilotTools_nAl",
            Some("underwritercopilottools"),
        ),
        ("a.action.b.action.Last-Op", Some("last")),
        ("action.Foo-Bar", Some("foo")),
        ("x.action.-OnlyOperation", Some("onlyoperation")),
        ("tool-email", Some("tool-email")),
        ("Send-Notification-Email", Some("send-notification-email")),
        ("My Tool.v2", Some("my_tool_v2")),
        ("x.actions.Foo-Bar", Some("x_actions_foo-bar")),
        ("???", None),
        ("x.action.???", Some("x_action")),
    ];
    for (id, tool) in cases {
        assert_eq!(canonical_tool(id).as_deref(), *tool, "{id}");
    }
    let long = format!("p.action.{}-Op", "Z".repeat(100));
    assert_eq!(canonical_tool(&long), Some("z".repeat(64)));
    // Every mapped tool fits the canonical-action schema's pattern.
    for id in ["__A__", "-x-", "p.action._-_Y", "Ünïcode-tool", &format!("{}x", "_".repeat(70))] {
        let tool = canonical_tool(id).unwrap();
        assert!(tool.len() <= 64 && !tool.starts_with(['_', '-']) && !tool.ends_with(['_', '-']), "{id}: {tool}");
        assert!(tool.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'));
    }
}

fn action_with_inputs(inputs: Value) -> Action {
    let mut body = email();
    body["inputValues"] = inputs;
    action_of(&decode_value(&body).unwrap()).clone()
}

// The resource is the first non-empty string among to, url, path, file (any case).
#[test]
fn resource_rule() {
    let cases: &[(Value, Option<&str>)] = &[
        (json!({"to": "a@b.com", "url": "https://x"}), Some("a@b.com")),
        (json!({"url": "https://x", "to": "a@b.com"}), Some("a@b.com")),
        (json!({"URL": "https://x", "path": "/p"}), Some("https://x")),
        (json!({"Path": "/srv/a", "file": "f"}), Some("/srv/a")),
        (json!({"File": "report.xlsx"}), Some("report.xlsx")),
        (json!({"to": "", "url": "https://x"}), Some("https://x")),
        (json!({"to": ["a@b.com"], "path": "/p"}), Some("/p")),
        (json!({"recipient": "a@b.com", "subject": "s"}), None),
        (json!({}), None),
    ];
    for (inputs, resource) in cases {
        let a = action_with_inputs(inputs.clone());
        assert_eq!(a.resource.as_deref(), *resource, "{inputs}");
        // Parameters are inputValues, unchanged and in order.
        assert_eq!(a.parameters_json, inputs.to_string());
    }
    // Absent or null inputValues are no parameters.
    assert_eq!(action_with_inputs(json!(null)).parameters_json, "{}");
    let mut body = email();
    body.as_object_mut().unwrap().remove("inputValues");
    assert_eq!(action_of(&decode_value(&body).unwrap()).parameters_json, "{}");
}

// Both spellings are read, entries of both in order; toolName stands in for a missing toolId.
#[test]
fn previous_outputs_both_spellings() {
    let mut body = email();
    body["plannerContext"]["previousToolsOutputs"] =
        json!([{"toolId": "p.action.A-One", "toolName": "One", "outputs": {"k": 1}}]);
    body["plannerContext"]["previousToolOutputs"] = json!([
        {"toolName": "Get-Weather", "outputs": [{"name": "t", "value": 3}]},
        {"toolId": "", "toolName": "Bare", "timestamp": "2026-05-06T09:12:05Z"}
    ]);
    let decoded = decode_value(&body).unwrap();
    let obs = observations_of(&decoded);
    let summary: Vec<(&str, &str, &str)> =
        obs.iter().map(|o| (o.original_tool.as_str(), o.tool.as_str(), o.output_json.as_str())).collect();
    assert_eq!(
        summary,
        vec![
            ("p.action.A-One", "a", r#"{"k":1}"#),
            ("Get-Weather", "get-weather", r#"[{"name":"t","value":3}]"#),
            ("Bare", "bare", "null"),
        ]
    );
    // Intent first, observations, then the action.
    assert!(matches!(decoded.events.first(), Some(Event::Intent(_))));
    assert!(matches!(decoded.events.last(), Some(Event::Action(_))));
    // Null lists are empty.
    body["plannerContext"]["previousToolsOutputs"] = json!(null);
    body["plannerContext"]["previousToolOutputs"] = json!(null);
    assert!(observations_of(&decode_value(&body).unwrap()).is_empty());
}

// ---- decode: validate and paths ----

// /validate with its empty body: no events, the validate session.
#[test]
fn validate_empty_body() {
    let req = request_to(PATH_VALIDATE, Vec::new());
    let decoded = CopilotStudio::decode(&req).unwrap();
    assert!(decoded.events.is_empty());
    assert_eq!(decoded.requester.session, VALIDATE_SESSION);
    assert_eq!(attributes(&decoded), json!({"correlationId": CORRELATION}));
    // Without a correlation header the attributes are empty; a body, if any, is ignored.
    let mut req = testing::json_request("{}");
    req.path = PATH_VALIDATE.to_owned();
    assert_eq!(attributes(&CopilotStudio::decode(&req).unwrap()), json!({}));
}

// Paths other than the two endpoints are unsupported.
#[test]
fn other_paths_are_unsupported() {
    let body = email().to_string();
    for path in ["", "/", "/validate/", "/Validate", "/analyze-tool-execution/x", "/analyze"] {
        match CopilotStudio::decode(&request_to(path, body.clone())) {
            Err(DecodeError::Unsupported(m)) => assert!(m.contains("is not a Copilot Studio endpoint"), "{m}"),
            other => panic!("{path}: {other:?}"),
        }
    }
}

// ---- decode: malformed input ----

#[test]
fn malformed_inputs() {
    let base = email();
    let with = |pointer: &str, v: Value| {
        let mut b = base.clone();
        *b.pointer_mut(pointer).unwrap() = v;
        b
    };
    let without = |parent: &str, key: &str| {
        let mut b = base.clone();
        b.pointer_mut(parent).unwrap().as_object_mut().unwrap().remove(key);
        b
    };
    let long = "x".repeat(257);
    let cases: Vec<(Value, &str)> = vec![
        (json!([1, 2]), "body is not a JSON object"),
        (json!("analyze"), "body is not a JSON object"),
        (without("", "plannerContext"), "missing `plannerContext`"),
        (without("", "toolDefinition"), "missing `toolDefinition`"),
        (without("", "conversationMetadata"), "missing `conversationMetadata`"),
        (with("/plannerContext", json!("x")), "`plannerContext` is not a JSON object"),
        (with("/toolDefinition", json!([])), "`toolDefinition` is not a JSON object"),
        (with("/plannerContext/userMessage", json!(7)), "`plannerContext.userMessage` is not a string"),
        (with("/plannerContext/thought", json!({})), "`plannerContext.thought` is not a string"),
        (without("/toolDefinition", "id"), "`toolDefinition.id` is missing or empty"),
        (with("/toolDefinition/id", json!("")), "`toolDefinition.id` is missing or empty"),
        (with("/toolDefinition/id", json!(42)), "`toolDefinition.id` is not a string"),
        (with("/toolDefinition/id", json!("???")), "`toolDefinition.id` `???` has no letter or digit"),
        (with("/toolDefinition/id", json!(long)), "`toolDefinition.id` is 257 bytes"),
        (with("/toolDefinition/name", json!(long)), "`toolDefinition.name` is 257 bytes"),
        (with("/inputValues", json!("to=x")), "`inputValues` is not a JSON object"),
        (with("/inputValues", json!([])), "`inputValues` is not a JSON object"),
        (with("/inputValues/to", json!("a".repeat(4097))), "`resource` is 4097 bytes"),
        (with("/conversationMetadata/conversationId", json!(null)).tap_remove_plan(), "names the conversation"),
        (with("/conversationMetadata/conversationId", json!(long)), "`conversationMetadata.conversationId` is 257"),
        (with("/conversationMetadata/conversationId", json!(1)), "`conversationMetadata.conversationId` is not"),
        (with("/conversationMetadata/agent", json!("otp_demo")), "`conversationMetadata.agent` is not a JSON object"),
        (with("/conversationMetadata/agent/name", json!(long)), "`conversationMetadata.agent.name` is 257 bytes"),
        (with("/conversationMetadata/agent/tenantId", json!(false)), "`conversationMetadata.agent.tenantId` is not"),
        (with("/conversationMetadata/user/id", json!(long)), "`conversationMetadata.user.id` is 257 bytes"),
        (with("/conversationMetadata/planStepId", json!(5)), "`conversationMetadata.planStepId` is not a string"),
        (with("/conversationMetadata/channelId", json!(long)), "`conversationMetadata.channelId` is 257 bytes"),
        (with("/conversationMetadata/trigger", json!(3)), "`conversationMetadata.trigger` is not a JSON object"),
        (with("/plannerContext/previousToolsOutputs", json!({})), "`plannerContext.previousToolsOutputs` is not an"),
        (with("/plannerContext/previousToolsOutputs", json!(["x"])), "`plannerContext.previousToolsOutputs[0]` is not"),
        (
            with("/plannerContext/previousToolsOutputs", json!([{"outputs": {}}])),
            "`plannerContext.previousToolsOutputs[0]` names no tool",
        ),
        (
            with("/plannerContext/previousToolsOutputs", json!([{"toolId": "a"}, {"toolId": 3}])),
            "`plannerContext.previousToolsOutputs[1].toolId` is not a string",
        ),
        (with("/plannerContext/previousToolsOutputs", json!([{"toolName": "%%"}])), "tool `%%` has no letter or digit"),
    ];
    for (body, needle) in cases {
        let m = malformed_message(&body);
        assert!(m.contains(needle), "body {body}: `{m}` lacks `{needle}`");
    }
}

trait TapRemovePlan {
    fn tap_remove_plan(self) -> Value;
}

impl TapRemovePlan for Value {
    fn tap_remove_plan(mut self) -> Value {
        self["conversationMetadata"].as_object_mut().unwrap().remove("planId");
        self
    }
}

// At most MAX_OBSERVATIONS previous outputs, counted over both spellings.
#[test]
fn previous_outputs_are_bounded() {
    let entry = json!({"toolId": "p.action.A-B", "outputs": {}});
    let mut body = email();
    body["plannerContext"]["previousToolsOutputs"] = Value::Array(vec![entry.clone(); MAX_OBSERVATIONS]);
    assert_eq!(observations_of(&decode_value(&body).unwrap()).len(), MAX_OBSERVATIONS);
    body["plannerContext"]["previousToolOutputs"] = json!([entry]);
    assert!(malformed_message(&body).contains("129 previous tool outputs, over the limit of 128"));
}

// A too-long correlation header is refused.
#[test]
fn correlation_header_is_bounded() {
    let mut req = request_to(PATH_ANALYZE, email().to_string());
    req.headers = vec![("x-ms-correlation-id".to_owned(), "c".repeat(257))];
    match CopilotStudio::decode(&req) {
        Err(DecodeError::Malformed(m)) => assert!(m.contains("`header x-ms-correlation-id` is 257 bytes"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// Bodies that are empty, not JSON, or over the size limit are malformed.
#[test]
fn non_json_empty_and_oversized_bodies() {
    match CopilotStudio::decode(&request_to(PATH_ANALYZE, Vec::new())) {
        Err(DecodeError::Malformed(m)) => assert_eq!(m, "body is empty"),
        other => panic!("{other:?}"),
    }
    for body in [&b"not json"[..], b" ", b"{\"plannerContext\": {", b"\xff\xfe"] {
        match CopilotStudio::decode(&request_to(PATH_ANALYZE, body)) {
            Err(DecodeError::Malformed(m)) => assert!(m.starts_with("body is not valid JSON"), "{m}"),
            other => panic!("{body:?}: {other:?}"),
        }
    }
    let mut big = email();
    big["inputValues"]["body"] = json!("a".repeat(DEFAULT_MAX_BODY_BYTES));
    assert!(malformed_message(&big).contains("over the 1048576-byte limit"));
    // The limit applies to /validate too.
    match CopilotStudio::decode(&request_to(PATH_VALIDATE, vec![b' '; DEFAULT_MAX_BODY_BYTES + 1])) {
        Err(DecodeError::Malformed(m)) => assert!(m.contains("over the 1048576-byte limit"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The limit follows the `max_body_bytes` setting.
    testing::set_setting("max_body_bytes", "2097152");
    assert!(decode_value(&big).is_ok());
    testing::set_setting("max_body_bytes", "100");
    assert!(malformed_message(&email()).contains("over the 100-byte limit"));
    testing::set_setting("max_body_bytes", "lots");
    assert!(decode_value(&email()).is_ok());
    testing::clear_settings();
}

fn nested(depth: usize) -> Value {
    let mut v = json!("leaf");
    for _ in 0..depth {
        v = json!({ "k": v });
    }
    v
}

// inputValues and outputs may nest 64 levels deep, not 65; far deeper input is refused by the parser.
#[test]
fn nesting_is_bounded() {
    let inputs = nested(MAX_JSON_DEPTH);
    assert_eq!(action_with_inputs(inputs.clone()).parameters_json, inputs.to_string());
    let mut body = email();
    body["inputValues"] = nested(MAX_JSON_DEPTH + 1);
    assert!(malformed_message(&body).contains("`inputValues` nests deeper than 64 levels"));
    let mut body = email();
    body["plannerContext"]["previousToolsOutputs"] = json!([{"toolId": "t", "outputs": [nested(MAX_JSON_DEPTH)]}]);
    assert!(malformed_message(&body).contains("`plannerContext.previousToolsOutputs[0].outputs` nests deeper than 64"));
    // 10 000 levels: no stack overflow, a malformed error.
    let deep = format!(r#"{{"plannerContext":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    match CopilotStudio::decode(&request_to(PATH_ANALYZE, deep)) {
        Err(DecodeError::Malformed(m)) => assert!(m.starts_with("body is not valid JSON"), "{m}"),
        other => panic!("{other:?}"),
    }
}

// Every prefix of a real body, and bodies with bytes flipped, decode or fail without panicking.
#[test]
fn truncated_and_mangled_bodies_never_panic() {
    let body = std::fs::read(fixtures().join("analyze-multiturn.json")).unwrap();
    for end in 0..body.len() {
        let _ = CopilotStudio::decode(&request_to(PATH_ANALYZE, &body[..end]));
    }
    for (i, replacement) in body.iter().enumerate().step_by(7).map(|(i, _)| (i, b"\"0{}[]:,n"[i % 9])) {
        let mut mangled = body.clone();
        mangled[i] = replacement;
        let _ = CopilotStudio::decode(&request_to(PATH_ANALYZE, mangled));
    }
}

// ---- encode ----

fn encode(req: &HttpRequest, v: &Verdict) -> Value {
    let JsonReply { status, content_type, body, .. } = testing::encode_json::<CopilotStudio>(req, v).unwrap();
    assert_eq!(status, 200, "an analyze reply is always 200");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    body
}

fn verdict(decision: Decision, reason: &str, receipt: Option<&str>) -> Verdict {
    let mut v = testing::verdict(decision, reason);
    v.receipt_id = receipt.map(str::to_owned);
    v
}

fn block(code: u32, reason: &str, diagnostics: &str) -> Value {
    json!({"blockAction": true, "reasonCode": code, "reason": reason, "diagnostics": diagnostics})
}

// Each of the five decisions, on the real capture.
#[test]
fn analyze_replies_for_every_decision() {
    let req = fixture_request("analyze-send-email.json");
    assert_eq!(encode(&req, &verdict(Decision::Allow, "ok", Some("r0"))), json!({"blockAction": false}));
    assert_eq!(
        encode(&req, &verdict(Decision::Deny, "external recipients are not allowed", Some("0190-abc"))),
        block(REASON_DENY, "external recipients are not allowed", "arbiter decision=deny receipt=0190-abc")
    );
    assert_eq!(
        encode(&req, &verdict(Decision::StepUp, "sending mail needs a manager", Some("r2"))),
        block(REASON_STEP_UP, "approval required: sending mail needs a manager", "arbiter decision=step-up receipt=r2")
    );
    assert_eq!(
        encode(&req, &verdict(Decision::Defer, "waiting for the ticket", Some("r3"))),
        block(REASON_DEFER, "deferred: waiting for the ticket", "arbiter decision=defer receipt=r3")
    );
    let mut modify = verdict(Decision::Modify, "strip the attachment", Some("r4"));
    modify.modified_parameters_json = Some(r#"{"to":"test@example.com","subject":"Test Email","body":""}"#.into());
    assert_eq!(
        encode(&req, &modify),
        block(
            REASON_MODIFY_UNSUPPORTED,
            "blocked: the parameters would need changing, and Copilot Studio cannot change a tool's input \
             (strip the attachment)",
            "arbiter decision=modify receipt=r4"
        )
    );
    // No receipt: the diagnostics say so.
    assert_eq!(encode(&req, &verdict(Decision::Deny, "no", None))["diagnostics"], "arbiter decision=deny receipt=none");
}

// The reason codes are distinct.
#[test]
fn reason_codes_are_distinct() {
    let mut codes = vec![REASON_DENY, REASON_STEP_UP, REASON_DEFER, REASON_MODIFY_UNSUPPORTED, REASON_FAULT];
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes, vec![1001, 1002, 1003, 1004, 1005]);
}

// MODIFY never lets the unmodified call through, whatever comes with it.
#[test]
fn modify_never_allows() {
    let req = fixture_request("analyze-send-email.json");
    for params in [None, Some("{}"), Some(r#"{"to":"x@y"}"#), Some("not json")] {
        for fault in [false, true] {
            for decided in [true, false] {
                let mut v = verdict(Decision::Modify, "rewrite", Some("r"));
                v.modified_parameters_json = params.map(str::to_owned);
                v.fault = fault;
                v.decided = decided;
                let body = encode(&req, &v);
                assert_eq!(body["blockAction"], true, "{params:?} fault={fault} decided={decided}");
                assert_ne!(body["reasonCode"], json!(null));
            }
        }
    }
}

// A fault-forced block gets the fault code, whatever the decision; hold mode's
// pending-approval DENY gets the step-up code.
#[test]
fn fault_and_pending_approval_replies() {
    let req = fixture_request("analyze-send-email.json");
    let mut fault = verdict(Decision::Deny, "blocked: plugin fault: trap (policy said allow: ok)", Some("r5"));
    fault.fault = true;
    assert_eq!(
        encode(&req, &fault),
        block(
            REASON_FAULT,
            "blocked: plugin fault: trap (policy said allow: ok)",
            "arbiter decision=deny receipt=r5 fault=true"
        )
    );
    let pending = "approval required (mail to externals); approval `ap-1` is pending: once an approver approves \
                   it, retry exactly the same action";
    assert_eq!(
        encode(&req, &verdict(Decision::Deny, pending, Some("r6"))),
        block(REASON_STEP_UP, pending, "arbiter decision=deny receipt=r6")
    );
    // A block that is not marked decided still blocks.
    let mut undecided = verdict(Decision::Deny, "no", None);
    undecided.decided = false;
    assert_eq!(encode(&req, &undecided)["blockAction"], true);
}

// A long reason is cut.
#[test]
fn long_reasons_are_clipped() {
    let req = fixture_request("analyze-send-email.json");
    let body = encode(&req, &verdict(Decision::Deny, &"r".repeat(5000), None));
    assert_eq!(body["reason"], format!("{}...", "r".repeat(2000)));
}

// /validate: OK for the host's neutral verdict; the documented error body if the host refused.
#[test]
fn validate_replies() {
    let req = fixture_request("validate-empty.json");
    let mut neutral = verdict(Decision::Allow, "recorded", None);
    neutral.decided = false;
    assert_eq!(encode(&req, &neutral), json!({"isSuccessful": true, "status": "OK"}));
    let mut refused = verdict(Decision::Deny, "blocked: store down", None);
    refused.decided = false;
    refused.fault = true;
    let JsonReply { status, body, .. } = testing::encode_json::<CopilotStudio>(&req, &refused).unwrap();
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"errorCode": 5031, "message": "blocked: store down", "httpStatus": 503,
               "diagnostics": "arbiter decision=deny receipt=none fault=true"})
    );
}

// A request decode would refuse is never answered with an allow-by-omission.
#[test]
fn unknown_path_replies_block() {
    let req = request_to("/other", "not json");
    assert_eq!(encode(&req, &verdict(Decision::Deny, "why", None))["blockAction"], true);
    assert_eq!(encode(&req, &verdict(Decision::Allow, "ok", None)), json!({"blockAction": false}));
}

// describe: identity, allow/deny only, events, and a blocking reply that blocks.
#[test]
fn describe_plugin() {
    let info = CopilotStudio::describe();
    assert_eq!(info.name, "copilot-studio");
    assert_eq!(info.vendor, "Microsoft Copilot Studio");
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.vendor_versions, vec!["2025-05-01".to_owned()]);
    assert_eq!(info.decisions, vec![Decision::Allow, Decision::Deny]);
    assert_eq!(info.events, vec!["validate", "analyzeToolExecution", "userMessage", "previousToolOutput"]);
    let reply = &info.blocking_reply;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers, vec![("content-type".to_owned(), "application/json".to_owned())]);
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body, block(REASON_FAULT, "{{reason}}", "arbiter blocking reply"));
    // The host substitutes the reason into a valid JSON string.
    let filled: Value = serde_json::from_str(&BLOCKING_REPLY.replace("{{reason}}", "blocked: trap")).unwrap();
    assert_eq!(filled["reason"], "blocked: trap");
}
