//! Verdict → Cursor hook reply.
//!
//! Every reply is HTTP 200 with a JSON body, which the command shim prints on
//! stdout. Each event has its own output form (lib.rs lists them); a
//! permission event always gets an explicit `permission`, because a hook
//! configured `failClosed` that prints no decision counts as failed.

use arbiter_adapter_kit::{blocks, json_reply, modified_parameters, reason, unusable_modify_reason, with_receipt};
use arbiter_sdk::{Decision, HttpRequest, HttpResponse, Verdict};
use serde_json::{Map, Value, json};

/// What a MODIFY can do on an event.
#[derive(Clone, Copy)]
enum Rewrite {
    /// `updated_input` replaces the whole tool input (`preToolUse`).
    Input,
    /// `updated_input` carries the new `command` (`beforeShellExecution`).
    Command,
    /// No rewrite is accepted (`beforeMCPExecution`): MODIFY is a deny.
    Refused,
}

/// Builds the reply to `req` for `verdict`.
pub(crate) fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
    let event = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(mut body)) => match body.remove("hook_event_name") {
            Some(Value::String(e)) => Some(e),
            _ => None,
        },
        _ => None,
    };
    json_reply(&reply(event.as_deref(), verdict))
}

fn reply(event: Option<&str>, v: &Verdict) -> Value {
    match event {
        Some("preToolUse") => permission(v, Rewrite::Input),
        Some("beforeShellExecution") => permission(v, Rewrite::Command),
        Some("beforeMCPExecution") => permission(v, Rewrite::Refused),
        Some("beforeReadFile" | "beforeTabFileRead") => read_permission(v),
        // `continue: false` keeps the prompt from being sent.
        Some("beforeSubmitPrompt") if blocks(v) => json!({"continue": false, "user_message": reason(v)}),
        Some("beforeSubmitPrompt") => json!({"continue": true}),
        // Nothing else is decided. `stop` stays `{}`: a `followup_message`
        // would submit a new user turn.
        Some(_) => json!({}),
        // Unreadable request: only a plain allow may pass silently.
        None => match v.decision {
            Decision::Allow => json!({}),
            _ => {
                let r = reason(v);
                json!({"permission": "deny", "continue": false, "user_message": r, "agent_message": r})
            }
        },
    }
}

/// `beforeShellExecution`, `beforeMCPExecution`, `preToolUse`: allow, deny,
/// ask, and a rewrite where the event accepts one.
fn permission(v: &Verdict, rewrite: Rewrite) -> Value {
    match v.decision {
        Decision::Allow => json!({"permission": "allow"}),
        Decision::Deny | Decision::Defer => deny(reason(v)),
        // Cursor's own prompt: the human at the console decides.
        Decision::StepUp => {
            let r = ask_reason(v);
            json!({"permission": "ask", "user_message": r, "agent_message": r})
        }
        Decision::Modify => match (rewrite, modified_parameters(v)) {
            (Rewrite::Refused, _) => deny(with_receipt(
                format!("Cursor cannot rewrite an MCP call's input, so the call is refused: {}", modify_reason(v)),
                v,
            )),
            (Rewrite::Command, Some(params)) if !params.get("command").is_some_and(Value::is_string) => {
                deny(with_receipt(format!("the rewrite has no `command` string: {}", modify_reason(v)), v))
            }
            (_, Some(params)) => allow_rewritten(params, reason(v)),
            (_, None) => deny(unusable_modify_reason(v)),
        },
    }
}

/// `beforeReadFile`, `beforeTabFileRead`: only allow or deny exist there.
fn read_permission(v: &Verdict) -> Value {
    match v.decision {
        Decision::Allow => json!({"permission": "allow"}),
        // In `hold` mode the host's STEP_UP arrives here as a deny whose
        // reason names the approval to wait for.
        Decision::Deny | Decision::Defer => deny(reason(v)),
        Decision::StepUp => deny(with_receipt(
            format!(
                "{}. Cursor cannot ask before a file read, so the read is blocked; list `beforeReadFile` in the \
                 integration's `step_up_hold_events` to have Arbiter's approvers decide",
                ask_reason_text(v)
            ),
            v,
        )),
        Decision::Modify => {
            deny(with_receipt(format!("a file read cannot be rewritten, so it is refused: {}", modify_reason(v)), v))
        }
    }
}

fn allow_rewritten(params: Map<String, Value>, reason: String) -> Value {
    json!({"permission": "allow", "updated_input": params, "agent_message": reason})
}

fn deny(reason: String) -> Value {
    json!({"permission": "deny", "user_message": reason, "agent_message": reason})
}

/// A MODIFY's reason, never empty.
fn modify_reason(v: &Verdict) -> &str {
    match v.reason.trim() {
        "" => "rewritten by Arbiter policy",
        r => r,
    }
}

/// The question put to the user on `ask`, with the receipt id.
fn ask_reason(v: &Verdict) -> String {
    with_receipt(ask_reason_text(v), v)
}

/// The host's STEP_UP reason already says approval is needed ("needs
/// approval by policy: ..."), so it is used as it is.
fn ask_reason_text(v: &Verdict) -> String {
    match v.reason.trim() {
        "" => "approval required by Arbiter policy".to_owned(),
        r => r.to_owned(),
    }
}
