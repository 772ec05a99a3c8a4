//! Verdict → Codex CLI hook reply.
//!
//! Every reply is HTTP 200 with a JSON body, which the command shim prints on
//! stdout. Codex validates it against a per-event schema that allows no
//! unknown field, refuses `permissionDecision: "allow"` without
//! `updatedInput` and a deny or block without a non-empty reason, and treats
//! any refusal (and `ask`) as a failed hook: the tool runs. So every reply
//! here uses only the fields that event's schema allows.

use arbiter_adapter_kit::{
    blocks, json_reply, modified_parameters, reason, setting_is, unusable_modify_reason, with_receipt,
};
use arbiter_sdk::{Decision, HttpRequest, HttpResponse, Verdict};
use serde_json::{Map, Value, json};

/// Builds the reply to `req` for `verdict`.
pub(crate) fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
    json_reply(&reply(event_name(&req.body).as_deref(), verdict))
}

/// The request's `hook_event_name`, if the body still parses.
fn event_name(body: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(body).ok()? {
        Value::Object(mut m) => match m.remove("hook_event_name")? {
            Value::String(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn reply(event: Option<&str>, v: &Verdict) -> Value {
    match event {
        // A blocking verdict blocks the tool even if the host did not mark
        // the request as a decision point: failing closed.
        Some("PreToolUse") if v.decided || blocks(v) => pre_tool_use(v),
        Some("PermissionRequest") if v.decided || blocks(v) => permission_request(v),
        Some("UserPromptSubmit") if blocks(v) => block(reason(v)),
        // Other events are not decided, and a `block` on Stop means "keep
        // working", so stay neutral.
        Some(_) => json!({}),
        // Unreadable request: only a plain allow may pass silently.
        None => match v.decision {
            Decision::Allow => json!({}),
            _ => block(reason(v)),
        },
    }
}

fn pre_tool_use(v: &Verdict) -> Value {
    match v.decision {
        // `permissionDecision: "allow"` alone is refused by Codex; no
        // objection is an empty object.
        Decision::Allow => json!({}),
        // STEP_UP and DEFER: never `ask` (Codex runs the tool on it); the
        // reason tells the agent to retry the identical action later.
        Decision::Deny | Decision::StepUp | Decision::Defer => pre_tool_use_output("deny", reason(v), None),
        Decision::Modify => match modified_parameters(v) {
            Some(params) => pre_tool_use_output("allow", reason(v), Some(params)),
            None => pre_tool_use_output("deny", unusable_modify_reason(v), None),
        },
    }
}

fn pre_tool_use_output(decision: &str, reason: String, updated: Option<Map<String, Value>>) -> Value {
    let mut out = Map::new();
    out.insert("hookEventName".to_owned(), json!("PreToolUse"));
    out.insert("permissionDecision".to_owned(), json!(decision));
    out.insert("permissionDecisionReason".to_owned(), json!(reason));
    if let Some(updated) = updated {
        out.insert("updatedInput".to_owned(), Value::Object(updated));
    }
    json!({"hookSpecificOutput": out})
}

fn permission_request(v: &Verdict) -> Value {
    let decision = match v.decision {
        // A policy ALLOW means "not forbidden", not "approved by a human":
        // only an integration that opts in approves Codex's prompt.
        Decision::Allow if setting_is("approve_permission_requests", "true") => json!({"behavior": "allow"}),
        Decision::Allow => return json!({}),
        Decision::Deny | Decision::StepUp | Decision::Defer => json!({"behavior": "deny", "message": reason(v)}),
        // Codex takes no rewritten input here (it fails the hook), and the
        // original must not run unchanged: deny, saying why.
        Decision::Modify => json!({"behavior": "deny", "message": with_receipt(
            format!("the rewrite cannot be applied to a PermissionRequest (use the PreToolUse hook): {}", v.reason),
            v,
        )}),
    };
    json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}})
}

fn block(reason: String) -> Value {
    json!({"decision": "block", "reason": reason})
}
