//! Policy pack test cases, run through the real PDP: what `arbiter policy
//! test DIR` runs and what the bundled packs' unit test runs.
//!
//! A case file under `<pack>/tests/*.json` holds one case or an array. A
//! case is either one action with an optional prior session state:
//!
//! ```json
//! {"name": "...", "action": {canonical action}, "session": {"data_classes": ["PII"]},
//!  "scores": {"alignment": 0.8, "confidence": 1.0}, "expect": {"decision": "DENY"}}
//! ```
//!
//! or a session's events in order, each action with its expectation:
//!
//! ```json
//! {"name": "...", "events": [
//!   {"intent": "clean up the test records I created"},
//!   {"observation": {"tool": "network", "operation": "egress"}},
//!   {"action": {...}, "expect": {"decision": "STEP_UP", "classification": "context_dependent_allow"}}]}
//! ```
//!
//! The session state each action sees is folded from the events before it
//! exactly as the context accumulator folds its log.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Pdp, PolicyOutcome, Scores};
use crate::context::{Entry, EntryKind, SessionSummary};
use crate::model::{AssertedBy, CanonicalAction, Decision, RequesterContext};

/// Computes alignment scores for an action from the session so far (the
/// pipeline's scorer); tests without one use explicit `scores` or none.
pub type Scorer<'a> = &'a dyn Fn(&SessionSummary, &CanonicalAction) -> Scores;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    action: Option<Value>,
    #[serde(default)]
    session: Option<PriorSession>,
    #[serde(default)]
    scores: Option<CaseScores>,
    #[serde(default)]
    expect: Option<Expect>,
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriorSession {
    #[serde(default)]
    data_classes: Vec<String>,
    #[serde(default)]
    untrusted_input: bool,
    #[serde(default)]
    actions: u64,
    #[serde(default)]
    denied: u64,
    #[serde(default)]
    egress: u64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseScores {
    #[serde(default)]
    alignment: Option<f64>,
    #[serde(default = "one")]
    confidence: f64,
    #[serde(default)]
    drift: f64,
}

fn one() -> f64 {
    1.0
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Event {
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    observation: Option<Value>,
    #[serde(default)]
    action: Option<Value>,
    /// Evidence supplied to the session (name → value), as the deferral
    /// service records it.
    #[serde(default)]
    evidence: Option<Map<String, Value>>,
    #[serde(default)]
    scores: Option<CaseScores>,
    #[serde(default)]
    expect: Option<Expect>,
}

/// One checked action.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseResult {
    /// File the case is in.
    pub file: String,
    /// Case name.
    pub case: String,
    /// Index of the event (0 for single-action cases).
    pub step: usize,
    /// What was expected, e.g. `DENY forbidden`.
    pub expected: String,
    /// What the PDP said.
    pub got: String,
    /// The PDP's reason.
    pub reason: String,
    /// Whether it matched.
    pub passed: bool,
}

/// Run every case in `files` (`tests/*.json` of a pack).
pub fn run(pdp: &Pdp, files: &[(String, Vec<u8>)], scorer: Option<Scorer<'_>>) -> Result<Vec<CaseResult>, String> {
    let mut results = Vec::new();
    for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("tests/") && p.ends_with(".json")) {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("`{path}`: {e}"))?;
        let cases: Vec<Case> = match value {
            Value::Array(items) => items
                .into_iter()
                .map(serde_json::from_value)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("`{path}`: {e}"))?,
            other => vec![serde_json::from_value(other).map_err(|e| format!("`{path}`: {e}"))?],
        };
        for case in cases {
            run_case(pdp, path, &case, scorer, &mut results)?;
        }
    }
    Ok(results)
}

fn run_case(
    pdp: &Pdp,
    file: &str,
    case: &Case,
    scorer: Option<Scorer<'_>>,
    out: &mut Vec<CaseResult>,
) -> Result<(), String> {
    let bad = |m: &str| format!("`{file}`: case `{}`: {m}", case.name);
    let mut session = SessionSummary::new("test-session");
    if let Some(prior) = &case.session {
        session.data_classes = prior.data_classes.iter().cloned().collect();
        session.untrusted_input = prior.untrusted_input;
        session.actions = prior.actions;
        session.denied = prior.denied;
        session.egress = prior.egress;
    }
    let single = match (&case.action, &case.expect) {
        (Some(a), Some(e)) => Some(Event {
            intent: None,
            observation: None,
            action: Some(a.clone()),
            evidence: None,
            scores: case.scores,
            expect: Some(clone_expect(e)),
        }),
        (None, None) => None,
        _ => return Err(bad("a single-action case needs both `action` and `expect`")),
    };
    if single.is_none() && case.events.is_empty() {
        return Err(bad("no `action` and no `events`"));
    }
    let events: Vec<&Event> = single.iter().chain(case.events.iter()).collect();
    let fold = |session: &mut SessionSummary, kind, data: Value| {
        let seq = session.entries;
        session.apply(&Entry { seq, kind, at: String::new(), data, prev_hash: String::new(), hash: String::new() });
    };
    for (step, event) in events.iter().enumerate() {
        match (&event.intent, &event.observation, &event.action) {
            _ if event.evidence.is_some()
                && event.intent.is_none()
                && event.observation.is_none()
                && event.action.is_none() =>
            {
                fold(&mut session, EntryKind::Evidence, json!({"evidence": event.evidence}));
            }
            (Some(text), None, None) if event.evidence.is_none() => {
                fold(&mut session, EntryKind::Intent, json!({"text": text}));
            }
            (None, Some(o), None) if event.evidence.is_none() => fold(&mut session, EntryKind::Observation, o.clone()),
            (None, None, Some(a)) if event.evidence.is_none() => {
                let expect =
                    event.expect.as_ref().ok_or_else(|| bad(&format!("event {step}: an action needs `expect`")))?;
                let action = pdp.map_action(action_from(a).map_err(|e| bad(&format!("event {step}: {e}")))?);
                let scores = match (event.scores, scorer) {
                    (Some(s), _) => Scores { alignment: s.alignment, confidence: s.confidence, drift: s.drift },
                    (None, Some(f)) => f(&session, &action),
                    (None, None) => Scores::default(),
                };
                let outcome = pdp.decide(&action, &session, &scores);
                out.push(check(file, &case.name, step, expect, &outcome));
                fold(
                    &mut session,
                    EntryKind::Action,
                    json!({"tool": action.tool, "operation": action.operation,
                           "decision": outcome.decision, "data_classes": outcome.data_classes,
                           "alignment": outcome.scores.alignment}),
                );
            }
            _ => {
                return Err(bad(&format!(
                    "event {step} must have exactly one of `intent`, `observation`, `evidence`, `action`"
                )));
            }
        }
    }
    Ok(())
}

fn clone_expect(e: &Expect) -> Expect {
    Expect { decision: e.decision, policy_ids: e.policy_ids.clone(), classification: e.classification.clone() }
}

fn check(file: &str, case: &str, step: usize, expect: &Expect, outcome: &PolicyOutcome) -> CaseResult {
    let mut passed = outcome.decision == expect.decision && outcome.fault.is_none();
    if let Some(ids) = &expect.policy_ids {
        let mut want = ids.clone();
        want.sort();
        let mut got = outcome.policy_ids.clone();
        got.sort();
        passed &= got == want;
    }
    if let Some(c) = &expect.classification {
        passed &= outcome.classification.as_deref() == Some(c.as_str());
    }
    let show = |d: Decision, c: Option<&str>, ids: Option<&[String]>| {
        let mut s = d.as_str().to_owned();
        if let Some(c) = c {
            s.push(' ');
            s.push_str(c);
        }
        if let Some(ids) = ids {
            s.push_str(&format!(" [{}]", ids.join(", ")));
        }
        s
    };
    CaseResult {
        file: file.to_owned(),
        case: case.to_owned(),
        step,
        expected: show(expect.decision, expect.classification.as_deref(), expect.policy_ids.as_deref()),
        got: show(outcome.decision, outcome.classification.as_deref(), Some(&outcome.policy_ids)),
        reason: outcome.reason.clone(),
        passed,
    }
}

/// A canonical action from a test case (missing fields get test defaults).
pub(crate) fn action_from(v: &Value) -> Result<CanonicalAction, String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let rc = v.get("requester_context").cloned().unwrap_or_else(|| json!({}));
    let rs = |k: &str| rc.get(k).and_then(Value::as_str).map(str::to_owned);
    let list = |k: &str| -> Vec<String> {
        rc.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    Ok(CanonicalAction {
        action_id: s("action_id").unwrap_or("test").to_owned(),
        timestamp: "2026-01-01T00:00:00.000Z".to_owned(),
        tool: s("tool").ok_or("action has no `tool`")?.to_owned(),
        operation: s("operation").ok_or("action has no `operation`")?.to_owned(),
        parameters: v.get("parameters").and_then(Value::as_object).cloned().unwrap_or_else(Map::new),
        resource: s("resource").map(str::to_owned),
        original_tool: s("original_tool").unwrap_or_default().to_owned(),
        event_kind: s("event_kind").unwrap_or("PreToolUse").to_owned(),
        integration: s("integration").unwrap_or("claude-code").to_owned(),
        requester_context: RequesterContext {
            session: rs("session").unwrap_or_else(|| "test-session".to_owned()),
            human: rs("human"),
            agent: rs("agent"),
            service: rs("service"),
            roles: list("roles"),
            scope: list("scope"),
            delegation_chain: list("delegation_chain"),
            asserted_by: AssertedBy::Caller,
            attributes: rc.get("attributes").and_then(Value::as_object).cloned().unwrap_or_default(),
        },
    })
}

/// The results as a fixed-width table, failures first.
pub fn table(results: &[CaseResult]) -> String {
    let mut rows: Vec<&CaseResult> = results.iter().collect();
    rows.sort_by_key(|r| r.passed);
    let mut out = format!("{:<6} {:<52} {:>4}  {:<44} {}\n", "RESULT", "CASE", "STEP", "EXPECTED", "GOT");
    for r in rows {
        let name: String = r.case.chars().take(52).collect();
        out.push_str(&format!(
            "{:<6} {:<52} {:>4}  {:<44} {}\n",
            if r.passed { "pass" } else { "FAIL" },
            name,
            r.step,
            r.expected,
            r.got
        ));
        if !r.passed {
            out.push_str(&format!("{:<6} {:<52} {:>4}  reason: {}\n", "", "", "", r.reason));
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    out.push_str(&format!("{} passed, {} failed\n", results.len() - failed, failed));
    out
}
