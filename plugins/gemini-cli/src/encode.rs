//! Verdict → Gemini CLI hook reply.
//!
//! Every reply is HTTP 200 with a JSON body, which the command shim prints on
//! stdout. Gemini CLI reads `decision` (`allow` / `deny`), `reason` (sent to
//! the agent as the tool error on a deny) and, on `BeforeTool`,
//! `hookSpecificOutput.tool_input` (merged into the tool's arguments). It
//! never gets `ask`: headless yolo runs hang on it.

use arbiter_adapter_kit::{
    blocks, json_reply, modified_parameters, modify_as_merge, reason, setting_is, unusable_modify_reason,
};
use arbiter_sdk::{Decision, HttpRequest, HttpResponse, Verdict};
use serde_json::{Map, Value, json};

/// Builds the reply to `req` for `verdict`.
pub(crate) fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
    let body = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(body)) => Some(body),
        _ => None,
    };
    let event = body.as_ref().and_then(|b| b.get("hook_event_name")).and_then(Value::as_str);
    json_reply(&reply(event, body.as_ref(), verdict))
}

fn reply(event: Option<&str>, body: Option<&Map<String, Value>>, v: &Verdict) -> Value {
    match event {
        // A blocking verdict blocks the tool even if the host did not mark
        // the request as a decision point: failing closed.
        Some("BeforeTool") if v.decided || blocks(v) => {
            let original = body.and_then(|b| b.get("tool_input")).and_then(Value::as_object);
            before_tool(original, v)
        }
        // A deny on the prompt blocks the turn (and discards the prompt).
        Some("BeforeAgent") if blocks(v) => deny(reason(v)),
        // Nothing else is decided; `deny` on AfterAgent would force a retry
        // turn and on AfterTool would hide the tool output, so stay neutral.
        Some(_) => json!({}),
        // Unreadable request: only a plain allow may pass silently.
        None => match v.decision {
            Decision::Allow => json!({}),
            _ => deny(reason(v)),
        },
    }
}

fn before_tool(original: Option<&Map<String, Value>>, v: &Verdict) -> Value {
    match v.decision {
        // `allow_reply = "neutral"` leaves the call to Gemini's own approval
        // settings: Arbiter then only blocks or rewrites.
        Decision::Allow if setting_is("allow_reply", "neutral") => json!({}),
        Decision::Allow => json!({"decision": "allow", "reason": reason(v)}),
        // STEP_UP and DEFER: never `ask` (it hangs headless runs); the reason
        // tells the agent to retry the identical action later.
        Decision::Deny | Decision::StepUp | Decision::Defer => deny(reason(v)),
        Decision::Modify => match modified_parameters(v) {
            Some(params) => json!({
                "decision": "allow",
                "reason": reason(v),
                "hookSpecificOutput": {
                    "hookEventName": "BeforeTool",
                    "tool_input": modify_as_merge(params, original),
                },
            }),
            None => deny(unusable_modify_reason(v)),
        },
    }
}

fn deny(reason: String) -> Value {
    json!({"decision": "deny", "reason": reason})
}
