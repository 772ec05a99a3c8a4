//! Verdict → Claude Code hook reply.
//!
//! Every reply is HTTP 200 with a JSON body: Claude Code treats any other
//! status, or a non-JSON body, as a failed hook and runs the tool.

use arbiter_sdk::{Decision, HttpRequest, HttpResponse, Verdict};
use serde_json::{Map, Value, json};

/// Builds the reply to `req` for `verdict`.
pub(crate) fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
    let body = reply(event_name(&req.body).as_deref(), verdict);
    HttpResponse::json(200, body.to_string())
}

/// The request's `hook_event_name`, if the body still parses (decode has
/// accepted it before the host asks for a reply, so it normally does).
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
    // Deny and defer block wherever the event can carry a block, even if the
    // host did not mark the request as a decision point: failing closed.
    let blocking = matches!(v.decision, Decision::Deny | Decision::Defer);
    match event {
        Some("PreToolUse") if v.decided || blocking => pre_tool_use(v),
        Some("PermissionRequest") if v.decided || blocking => permission_request(v),
        Some("UserPromptSubmit") if blocking => json!({"decision": "block", "reason": reason(v)}),
        // Other events (Stop, PostToolUse...) are not decided, and a `block`
        // there means something else (Stop: keep working), so stay neutral.
        Some(_) => json!({}),
        // Unreadable request: only a plain allow or step-up may pass silently.
        None => match v.decision {
            Decision::Allow | Decision::StepUp => json!({}),
            Decision::Deny | Decision::Modify | Decision::Defer => blocking_body(&reason(v)),
        },
    }
}

fn pre_tool_use(v: &Verdict) -> Value {
    let (decision, updated) = match v.decision {
        // `allow_reply = "neutral"` keeps Claude Code's own permission
        // prompts: Arbiter then only ever blocks, rewrites or asks.
        Decision::Allow if arbiter_sdk::config::get("allow_reply").is_some_and(|r| r == "neutral") => return json!({}),
        Decision::Allow => ("allow", None),
        Decision::Deny | Decision::Defer => ("deny", None),
        Decision::StepUp => ("ask", None),
        Decision::Modify => match modified_parameters(v) {
            Some(params) => ("allow", Some(params)),
            None => return pre_tool_use_output("deny", &unusable_modify_reason(v), None),
        },
    };
    pre_tool_use_output(decision, &reason(v), updated)
}

fn pre_tool_use_output(decision: &str, reason: &str, updated: Option<Map<String, Value>>) -> Value {
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
        // answering `allow` here would skip the prompt the user's own
        // permission settings asked for. Only when the integration opts in
        // (`approve_permission_requests = "true"`) does Arbiter approve.
        Decision::Allow if approves_permission_requests() => json!({"behavior": "allow"}),
        Decision::Allow => return json!({}),
        Decision::Modify => match modified_parameters(v) {
            Some(params) => json!({"behavior": "allow", "updatedInput": params}),
            None => json!({"behavior": "deny", "message": unusable_modify_reason(v)}),
        },
        Decision::Deny | Decision::Defer => json!({"behavior": "deny", "message": reason(v)}),
        // Leave it to Claude Code's own permission prompt.
        Decision::StepUp => return json!({}),
    };
    json!({"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}})
}

fn approves_permission_requests() -> bool {
    arbiter_sdk::config::get("approve_permission_requests").is_some_and(|v| v == "true")
}

/// The full replacement input for a MODIFY verdict, if it is a JSON object.
fn modified_parameters(v: &Verdict) -> Option<Map<String, Value>> {
    match serde_json::from_str(v.modified_parameters_json.as_deref()?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A MODIFY whose parameters cannot be applied must not run the original
/// input unchanged, so it becomes a deny that says why.
fn unusable_modify_reason(v: &Verdict) -> String {
    with_receipt(format!("modify verdict without usable modified parameters: {}", v.reason), v)
}

/// The reason shown to the agent: defer is marked as such, and the receipt
/// id is appended so a user can find the record.
fn reason(v: &Verdict) -> String {
    let text = match v.decision {
        Decision::Defer => format!("deferred: {}", v.reason),
        _ => v.reason.clone(),
    };
    with_receipt(text, v)
}

fn with_receipt(mut text: String, v: &Verdict) -> String {
    if let Some(id) = &v.receipt_id {
        text.push_str(" [arbiter receipt ");
        text.push_str(id);
        text.push(']');
    }
    text
}

/// The same body as the plugin's blocking reply, with the reason filled in.
fn blocking_body(reason: &str) -> Value {
    json!({
        "decision": "block",
        "reason": reason,
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        },
    })
}
