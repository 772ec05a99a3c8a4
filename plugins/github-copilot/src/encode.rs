//! Verdict → Copilot hook reply.
//!
//! Every reply is HTTP 200 with a JSON body: Copilot 1.0.102 turns an HTTP
//! 5xx into a deny ("hook errored") and a timeout into an allow, so the
//! decision is always in the body. Both payload dialects read the same
//! output fields.

use arbiter_adapter_kit::{
    blocks, json_reply, modified_parameters, reason, setting_is, unusable_modify_reason, with_receipt,
};
use arbiter_sdk::{Decision, HttpRequest, HttpResponse, Verdict};
use serde_json::{Map, Value, json};

use crate::event::{Kind, hook_event};

/// Builds the reply to `req` for `verdict`.
pub(crate) fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
    let kind = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(body)) => hook_event(req, &body).ok().map(|e| e.kind),
        _ => None,
    };
    json_reply(&reply(kind, verdict))
}

fn reply(kind: Option<Kind>, v: &Verdict) -> Value {
    match kind {
        // A blocking verdict blocks the tool even if the host did not mark
        // the request as a decision point: failing closed.
        Some(Kind::PreToolUse) if v.decided || blocks(v) => pre_tool_use(v),
        Some(Kind::PermissionRequest) if v.decided || blocks(v) => permission_request(v),
        // Copilot drops the output of http `userPromptSubmitted` hooks, and a
        // `block` on agentStop means "keep working": stay neutral.
        Some(_) => json!({}),
        // Unreadable request: only a plain allow may pass silently.
        None => match v.decision {
            Decision::Allow => json!({}),
            _ => {
                let r = reason(v);
                json!({"permissionDecision": "deny", "permissionDecisionReason": r, "behavior": "deny", "message": r})
            }
        },
    }
}

/// True when a human answers Copilot's prompts (`interactive = "true"`).
fn interactive() -> bool {
    setting_is("interactive", "true")
}

fn pre_tool_use(v: &Verdict) -> Value {
    match v.decision {
        // `allow_reply = "neutral"` keeps Copilot's own permission prompts.
        Decision::Allow if setting_is("allow_reply", "neutral") => json!({}),
        Decision::Allow => decision("allow", reason(v), None),
        Decision::Deny | Decision::Defer => decision("deny", reason(v), None),
        // Copilot's own prompt, where someone can answer it; headless runs
        // turn `ask` into a deny that never names an approval, so there the
        // deny says the action awaits approval and to retry it.
        Decision::StepUp if interactive() => decision("ask", ask_reason(v), None),
        Decision::StepUp => decision("deny", reason(v), None),
        Decision::Modify => match modified_parameters(v) {
            Some(params) => decision("allow", reason(v), Some(params)),
            None => decision("deny", unusable_modify_reason(v), None),
        },
    }
}

fn decision(decision: &str, reason: String, modified: Option<Map<String, Value>>) -> Value {
    let mut out = Map::new();
    out.insert("permissionDecision".to_owned(), json!(decision));
    out.insert("permissionDecisionReason".to_owned(), json!(reason));
    if let Some(modified) = modified {
        out.insert("modifiedArgs".to_owned(), Value::Object(modified));
    }
    Value::Object(out)
}

/// The reason shown with Copilot's own approval prompt.
fn ask_reason(v: &Verdict) -> String {
    let r = v.reason.trim();
    with_receipt(if r.is_empty() { "Arbiter policy requires approval".to_owned() } else { r.to_owned() }, v)
}

fn permission_request(v: &Verdict) -> Value {
    match v.decision {
        // A policy ALLOW means "not forbidden", not "approved by a human":
        // only an integration that opts in approves Copilot's prompt.
        Decision::Allow if setting_is("approve_permission_requests", "true") => json!({"behavior": "allow"}),
        Decision::Allow => json!({}),
        Decision::Deny | Decision::Defer => json!({"behavior": "deny", "message": reason(v)}),
        // Falling through (`{}`) leaves the decision to Copilot's prompt.
        Decision::StepUp if interactive() => json!({}),
        Decision::StepUp => json!({"behavior": "deny", "message": reason(v)}),
        // permissionRequest takes no rewritten arguments, and the original
        // must not run unchanged: deny, saying why.
        Decision::Modify => json!({"behavior": "deny", "message": with_receipt(
            format!("the rewrite cannot be applied to a permissionRequest (use the preToolUse hook): {}", v.reason),
            v,
        )}),
    }
}
