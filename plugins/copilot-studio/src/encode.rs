//! Verdict → Copilot Studio reply.
//!
//! An analyze reply is always HTTP 200 with JSON: Copilot Studio runs the
//! tool when the provider times out or fails, so only an explicit
//! `"blockAction": true` stops it. It carries allow and block only; every
//! verdict other than ALLOW is a block, with a reason code saying which.

use arbiter_sdk::{Decision, HttpRequest, HttpResponse, Verdict};
use serde_json::{Value, json};

use crate::PATH_VALIDATE;

/// `reasonCode` of a DENY.
pub const REASON_DENY: u32 = 1001;

/// `reasonCode` of a STEP_UP: the action waits for an approver (the host's
/// hold mode turns STEP_UP into a DENY that names the pending approval; that
/// DENY gets this code too). Retrying after approval lets it through.
pub const REASON_STEP_UP: u32 = 1002;

/// `reasonCode` of a DEFER: the decision waits for more evidence.
pub const REASON_DEFER: u32 = 1003;

/// `reasonCode` of a MODIFY: the action would be allowed only with changed
/// parameters, and Copilot Studio cannot change a tool's input.
pub const REASON_MODIFY_UNSUPPORTED: u32 = 1004;

/// `reasonCode` of a block forced by a fault (plugin, policy or store), and
/// of the blocking reply (undecodable request, plugin trap or timeout).
pub const REASON_FAULT: u32 = 1005;

/// Longest `reason` sent, in characters.
const MAX_REASON_CHARS: usize = 2000;

/// How the host's hold mode phrases a STEP_UP it turned into a DENY while
/// the approval is pending (`pending_reason` in the host's pipeline).
const PENDING_APPROVAL_PREFIX: &str = "approval required (";

/// Builds the reply to `req` for `verdict`.
pub(crate) fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
    if req.path == PATH_VALIDATE {
        return validate_reply(verdict);
    }
    // `/analyze-tool-execution`, and any request decode did not accept
    // (it is never encoded, but if it were, it must block, not pass).
    HttpResponse::json(200, analyze_reply(verdict).to_string())
}

/// The `/validate` reply: OK, unless the host could not accept the call.
fn validate_reply(v: &Verdict) -> HttpResponse {
    match v.decision {
        Decision::Allow => HttpResponse::json(200, json!({"isSuccessful": true, "status": "OK"}).to_string()),
        // Copilot Studio's documented error body; the admin sees the setup fail.
        _ => HttpResponse::json(
            503,
            json!({"errorCode": 5031, "message": clip(&v.reason), "httpStatus": 503, "diagnostics": diagnostics(v)})
                .to_string(),
        ),
    }
}

fn analyze_reply(v: &Verdict) -> Value {
    let (code, reason) = match v.decision {
        Decision::Allow => return json!({"blockAction": false}),
        _ if v.fault => (REASON_FAULT, v.reason.clone()),
        Decision::Deny if v.reason.starts_with(PENDING_APPROVAL_PREFIX) => (REASON_STEP_UP, v.reason.clone()),
        Decision::Deny => (REASON_DENY, v.reason.clone()),
        Decision::StepUp => (REASON_STEP_UP, format!("approval required: {}", v.reason)),
        Decision::Defer => (REASON_DEFER, format!("deferred: {}", v.reason)),
        // Never the unmodified call: Copilot Studio would run it as it is.
        Decision::Modify => (
            REASON_MODIFY_UNSUPPORTED,
            format!(
                "blocked: the parameters would need changing, and Copilot Studio cannot change a tool's input \
                 ({})",
                v.reason
            ),
        ),
    };
    json!({"blockAction": true, "reasonCode": code, "reason": clip(&reason), "diagnostics": diagnostics(v)})
}

/// Where to find the record: the decision, the receipt, and whether a fault
/// forced the answer.
fn diagnostics(v: &Verdict) -> String {
    let receipt = v.receipt_id.as_deref().unwrap_or("none");
    let fault = if v.fault { " fault=true" } else { "" };
    format!("arbiter decision={} receipt={receipt}{fault}", v.decision)
}

fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_REASON_CHARS {
        s.to_owned()
    } else {
        let head: String = s.chars().take(MAX_REASON_CHARS).collect();
        format!("{head}...")
    }
}
