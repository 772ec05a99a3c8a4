//! Runs the bundled pack's JSON test cases through the real PDP, plus unit
//! checks of pack loading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use super::*;
use crate::model::{AssertedBy, RequesterContext};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    action: Value,
    #[serde(default)]
    session: Option<SessionState>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionState {
    #[serde(default)]
    data_classes: Vec<String>,
    #[serde(default)]
    untrusted_input: bool,
    #[serde(default)]
    actions: u64,
    #[serde(default)]
    egress: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Decision,
    #[serde(default)]
    policy_ids: Option<Vec<String>>,
    #[serde(default)]
    classification: Option<String>,
}

fn action_from(v: &Value) -> CanonicalAction {
    let rc = v.get("requester_context").cloned().unwrap_or(json!({"session": "test"}));
    CanonicalAction {
        action_id: "test".to_owned(),
        timestamp: "2026-11-23T00:00:00.000Z".to_owned(),
        tool: v["tool"].as_str().unwrap().to_owned(),
        operation: v["operation"].as_str().unwrap().to_owned(),
        parameters: v.get("parameters").and_then(Value::as_object).cloned().unwrap_or_default(),
        resource: v.get("resource").and_then(Value::as_str).map(str::to_owned),
        original_tool: v.get("original_tool").and_then(Value::as_str).unwrap_or_default().to_owned(),
        event_kind: v.get("event_kind").and_then(Value::as_str).unwrap_or("PreToolUse").to_owned(),
        integration: v.get("integration").and_then(Value::as_str).unwrap_or("claude-code").to_owned(),
        requester_context: RequesterContext {
            session: rc["session"].as_str().unwrap_or("test").to_owned(),
            human: rc.get("human").and_then(Value::as_str).map(str::to_owned),
            agent: rc.get("agent").and_then(Value::as_str).map(str::to_owned),
            service: rc.get("service").and_then(Value::as_str).map(str::to_owned),
            roles: serde_json::from_value(rc.get("roles").cloned().unwrap_or(json!([]))).unwrap(),
            scope: Vec::new(),
            delegation_chain: Vec::new(),
            asserted_by: AssertedBy::Caller,
            attributes: Map::new(),
        },
    }
}

#[test]
// Every case in policies/baseline/tests decides as it expects.
fn bundled_pack_cases_hold() {
    let pdp = Pdp::new(PolicyPack::bundled().unwrap(), None);
    let mut files = Vec::new();
    collect_embedded(&BASELINE, &mut files);
    let mut failures = Vec::new();
    let mut count = 0;
    for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("tests/") && p.ends_with(".json")) {
        let cases: Vec<Case> = match serde_json::from_slice::<Value>(bytes).unwrap() {
            Value::Array(_) => serde_json::from_slice(bytes).unwrap(),
            _ => vec![serde_json::from_slice(bytes).unwrap()],
        };
        for case in cases {
            count += 1;
            let action = action_from(&case.action);
            let mut session = SessionSummary::new(&action.requester_context.session);
            if let Some(s) = &case.session {
                session.data_classes = s.data_classes.iter().cloned().collect();
                session.untrusted_input = s.untrusted_input;
                session.actions = s.actions;
                session.egress = s.egress;
            }
            let out = pdp.decide(&action, &session);
            let mut ok = out.decision == case.expect.decision && out.fault.is_none();
            if let Some(ids) = &case.expect.policy_ids {
                let mut want = ids.clone();
                want.sort();
                ok &= out.policy_ids == want;
            }
            if let Some(c) = &case.expect.classification {
                ok &= out.classification.as_deref() == Some(c.as_str());
            }
            if !ok {
                failures.push(format!(
                    "{path}: {}: got {:?} {:?} ({}) signals={:?}",
                    case.name, out.decision, out.policy_ids, out.reason, out.signals
                ));
            }
        }
    }
    assert!(count >= 10, "too few cases: {count}");
    assert!(failures.is_empty(), "{} of {count} cases failed:\n{}", failures.len(), failures.join("\n"));
}

fn pack(cedar: &str) -> Result<PolicyPack, PackError> {
    PolicyPack::from_files(vec![
        ("pack.toml".to_owned(), b"name = \"t\"\nversion = \"1.0.0\"\n".to_vec()),
        ("p.cedar".to_owned(), cedar.as_bytes().to_vec()),
    ])
}

#[test]
// A policy without @id, with a duplicate id or an unknown class is refused.
fn annotation_rules_are_enforced() {
    assert!(pack("permit(principal, action, resource);").is_err());
    assert!(
        pack("@id(\"a\") permit(principal, action, resource); @id(\"a\") forbid(principal, action, resource);")
            .is_err()
    );
    assert!(pack("@id(\"a\") @classification(\"maybe\") permit(principal, action, resource);").is_err());
    assert!(pack("@id(\"a\") @decision(\"ALLOW\") forbid(principal, action, resource);").is_err());
    assert!(pack("@id(\"a\") @classification(\"forbidden\") forbid(principal, action, resource);").is_ok());
}

#[test]
// A policy that errors at evaluation denies, instead of being skipped.
fn evaluation_error_fails_closed() {
    let p =
        pack("@id(\"needs-ticket\") forbid(principal, action, resource) when { context.parameters.ticket == \"x\" };")
            .unwrap();
    let pdp = Pdp::new(p, Some(Posture::Allow));
    let a = action_from(&json!({"tool": "shell", "operation": "exec", "parameters": {"command": "ls"}}));
    let out = pdp.decide(&a, &SessionSummary::new("s"));
    assert_eq!(out.decision, Decision::Deny);
    assert!(out.fault.is_some());
}

#[test]
// Unmatched actions get the default posture under the default policy id.
fn default_posture_applies() {
    let p = pack("@id(\"f\") forbid(principal, action == Action::\"shell.exec\", resource) when { context.signals.contains(\"x\") };").unwrap();
    let a = action_from(&json!({"tool": "file", "operation": "read", "parameters": {}}));
    let allow =
        Pdp::new(pack("@id(\"f\") forbid(principal, action == Action::\"shell.exec\", resource);").unwrap(), None)
            .decide(&a, &SessionSummary::new("s"));
    assert_eq!((allow.decision, allow.policy_ids.clone()), (Decision::Allow, vec![DEFAULT_POLICY_ID.to_owned()]));
    let deny = Pdp::new(p, Some(Posture::Deny)).decide(&a, &SessionSummary::new("s"));
    assert_eq!(deny.decision, Decision::Deny);
}

#[test]
// A payload key that Cedar's JSON format reads as an entity escape stays a
// plain attribute, so a payload cannot smuggle in an entity reference.
fn entity_escapes_in_parameters_are_plain_attributes() {
    let p = pack("@id(\"f\") forbid(principal, action, resource) when { context.parameters has \"__entity\" && context.parameters[\"__entity\"] has \"id\" };").unwrap();
    let a = action_from(&json!({"tool": "shell", "operation": "exec",
        "parameters": {"__entity": {"type": "Agent", "id": "root"}, "n": 1.5, "z": null}}));
    let out = Pdp::new(p, Some(Posture::Allow)).decide(&a, &SessionSummary::new("s"));
    assert_eq!((out.decision, out.fault.is_none()), (Decision::Deny, true), "{}", out.reason);
    let v = cedar_safe(&json!({"n": 1.5, "z": null}), 0).unwrap();
    assert_eq!(v["n"], json!("1.5"));
    assert!(v.get("z").is_none());
}

#[test]
// A forbidden command hidden in the middle of a very long parameter is found.
fn long_parameters_are_scanned_whole() {
    let pdp = Pdp::new(PolicyPack::bundled().unwrap(), None);
    let padding = "a".repeat(300 * 1024);
    let command = format!("echo {padding}; rm -rf / ; echo {padding}");
    let a = action_from(&json!({"tool": "shell", "operation": "exec", "parameters": {"command": command}}));
    let out = pdp.decide(&a, &SessionSummary::new("s"));
    assert_eq!(out.decision, Decision::Deny, "{}", out.reason);
    assert_eq!(out.classification.as_deref(), Some("forbidden"));
}
