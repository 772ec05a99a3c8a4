//! The self-test a bundle carries: each fixture's request is decoded by a
//! fresh instance of the new plugin, and each of its verdicts encoded, before
//! the plugin may serve. A fixture that does not give what it expects keeps
//! the plugin out.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::bundle::{DecodeOutcome, ExpectReply, Fixture};
use super::{Plugin, PluginHost, wit};

/// Run every fixture against `plugin`; `Err((fixture, reason))` names the
/// first that fails.
pub(super) async fn run(
    host: &PluginHost,
    plugin: &Arc<Plugin>,
    fixtures: &[(String, Vec<u8>)],
) -> Result<(), (String, String)> {
    for (name, bytes) in fixtures {
        run_one(host, plugin, bytes).await.map_err(|reason| (name.clone(), reason))?;
    }
    Ok(())
}

async fn run_one(host: &PluginHost, plugin: &Arc<Plugin>, bytes: &[u8]) -> Result<(), String> {
    let fixture: Fixture = serde_json::from_slice(bytes).map_err(|e| format!("invalid fixture: {e}"))?;
    let body = match &fixture.request.body {
        Some(v) => serde_json::to_vec(v).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let request = Arc::new(wit::HttpRequest {
        method: fixture.request.method.to_ascii_uppercase(),
        path: fixture.request.path.clone(),
        headers: fixture.request.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
        body,
    });
    let settings: Arc<BTreeMap<String, String>> = Arc::new(fixture.settings.clone());
    let decoded = host
        .decode_raw(plugin, settings.clone(), request.clone())
        .await
        .map_err(|f| format!("decode failed: {}", f.message))?;
    let expect = &fixture.decode;
    match (expect.result, decoded) {
        (DecodeOutcome::Events, Ok(decoded)) => {
            if let Some(session) = &expect.session
                && &decoded.requester.session != session
            {
                return Err(format!("decode gave session `{}`, expected `{session}`", decoded.requester.session));
            }
            if let Some(events) = &expect.events {
                let actual: Vec<Value> = decoded.events.iter().map(event_json).collect();
                if actual.len() != events.len() {
                    return Err(format!("decode gave {} events, expected {}", actual.len(), events.len()));
                }
                for (i, (a, e)) in actual.iter().zip(events).enumerate() {
                    contains(a, &Value::Object(e.clone()), &format!("events[{i}]"))?;
                }
            }
        }
        (DecodeOutcome::Malformed, Err(wit::DecodeError::Malformed(_)))
        | (DecodeOutcome::Unsupported, Err(wit::DecodeError::Unsupported(_))) => {}
        (want, Ok(_)) => return Err(format!("decode returned events, expected `{}`", outcome_name(want))),
        (want, Err(e)) => {
            let (kind, message) = match e {
                wit::DecodeError::Malformed(m) => ("malformed", m),
                wit::DecodeError::Unsupported(m) => ("unsupported", m),
            };
            return Err(format!("decode refused the request as {kind} ({message}), expected `{}`", outcome_name(want)));
        }
    }
    for (i, reply) in fixture.replies.iter().enumerate() {
        check_reply(host, plugin, &settings, &request, reply).await.map_err(|e| format!("replies[{i}]: {e}"))?;
    }
    Ok(())
}

fn outcome_name(outcome: DecodeOutcome) -> &'static str {
    match outcome {
        DecodeOutcome::Events => "events",
        DecodeOutcome::Malformed => "malformed",
        DecodeOutcome::Unsupported => "unsupported",
    }
}

async fn check_reply(
    host: &PluginHost,
    plugin: &Arc<Plugin>,
    settings: &Arc<BTreeMap<String, String>>,
    request: &Arc<wit::HttpRequest>,
    expect: &ExpectReply,
) -> Result<(), String> {
    let v = &expect.verdict;
    let verdict = wit::Verdict {
        decision: decision(&v.decision)?,
        reason: v.reason.clone(),
        receipt_id: v.receipt_id.clone(),
        modified_parameters_json: v.modified_parameters.as_ref().map(Value::to_string),
        fault: v.fault,
        decided: v.decided,
    };
    let reply = host
        .encode_unrecorded(plugin, settings.clone(), request.clone(), verdict)
        .await
        .map_err(|f| format!("encode failed: {}", f.message))?;
    if reply.status != expect.status {
        return Err(format!("encode gave status {}, expected {}", reply.status, expect.status));
    }
    if let Some(body) = &expect.body {
        let actual: Value =
            serde_json::from_slice(&reply.body).map_err(|e| format!("encode gave a body that is not JSON: {e}"))?;
        contains(&actual, body, "body")?;
    }
    Ok(())
}

fn decision(name: &str) -> Result<wit::Decision, String> {
    match name.to_ascii_lowercase().replace('-', "_").as_str() {
        "allow" => Ok(wit::Decision::Allow),
        "deny" => Ok(wit::Decision::Deny),
        "modify" => Ok(wit::Decision::Modify),
        "step_up" => Ok(wit::Decision::StepUp),
        "defer" => Ok(wit::Decision::Defer),
        other => Err(format!("unknown decision `{other}`")),
    }
}

/// JSON strings a plugin hands over are parsed, so fixtures can match
/// inside them; ones that are not JSON stay strings.
fn parsed(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// An event as fixtures name its fields.
fn event_json(event: &wit::Event) -> Value {
    let lifecycle = |kind: &str, l: &wit::Lifecycle| json!({"type": kind, "event_kind": l.event_kind, "detail": parsed(&l.detail_json)});
    match event {
        wit::Event::Intent(i) => json!({"type": "intent", "text": i.text, "event_kind": i.event_kind}),
        wit::Event::Action(a) => json!({
            "type": "action", "tool": a.tool, "operation": a.operation, "parameters": parsed(&a.parameters_json),
            "resource": a.resource, "original_tool": a.original_tool, "event_kind": a.event_kind, "call_id": a.call_id,
        }),
        wit::Event::Observation(o) => json!({
            "type": "observation", "tool": o.tool, "operation": o.operation, "output": parsed(&o.output_json),
            "original_tool": o.original_tool, "event_kind": o.event_kind, "call_id": o.call_id,
        }),
        wit::Event::SessionStart(l) => lifecycle("session_start", l),
        wit::Event::SessionEnd(l) => lifecycle("session_end", l),
        wit::Event::Other(l) => lifecycle("other", l),
    }
}

/// `actual` contains `expected`: every member of an expected object is in
/// the actual one (recursively), arrays match element by element with equal
/// lengths, other values are equal. The error names the first difference.
fn contains(actual: &Value, expected: &Value, path: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                let av = a.get(k).ok_or_else(|| format!("`{path}.{k}` is missing"))?;
                contains(av, ev, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(e)) => {
            if a.len() != e.len() {
                return Err(format!("`{path}` has {} items, expected {}", a.len(), e.len()));
            }
            a.iter().zip(e).enumerate().try_for_each(|(i, (av, ev))| contains(av, ev, &format!("{path}[{i}]")))
        }
        (a, e) if a == e => Ok(()),
        (a, e) => Err(format!("`{path}` is {}, expected {}", short(a), short(e))),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 200 {
        return s;
    }
    let end = (0..=200).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    format!("{}...", s.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    // A subset matches; a missing member, a different value and a different
    // array length are each named by path.
    fn contains_reports_the_first_difference() {
        let actual = json!({"a": {"b": 1, "c": [1, {"d": "x", "e": 2}]}, "f": true});
        assert!(contains(&actual, &json!({"a": {"c": [1, {"d": "x"}]}}), "body").is_ok());
        assert_eq!(contains(&actual, &json!({"g": 1}), "body").unwrap_err(), "`body.g` is missing");
        assert_eq!(contains(&actual, &json!({"a": {"b": 2}}), "body").unwrap_err(), "`body.a.b` is 1, expected 2");
        assert_eq!(
            contains(&actual, &json!({"a": {"c": [1]}}), "body").unwrap_err(),
            "`body.a.c` has 2 items, expected 1"
        );
    }

    #[test]
    // Decision names accept either spelling of step-up and refuse others.
    fn decision_names() {
        assert_eq!(decision("step-up").unwrap(), wit::Decision::StepUp);
        assert_eq!(decision("STEP_UP").unwrap(), wit::Decision::StepUp);
        assert!(decision("maybe").is_err());
    }
}
