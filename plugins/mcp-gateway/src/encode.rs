//! Verdict → gateway reply.
//!
//! Every reply is HTTP 200 with a JSON body. The gateway forwards a call only
//! on `allow` or `modify` (with `arguments`); everything else blocks it.

use arbiter_adapter_kit::{json_reply, modified_parameters, reason, unusable_modify_reason};
use arbiter_sdk::{Decision, HttpRequest, HttpResponse, Verdict};
use serde_json::{Map, Value};

/// Builds the reply to `req` for `verdict`.
pub(crate) fn encode(_req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
    json_reply(&reply(verdict))
}

fn reply(v: &Verdict) -> Value {
    let mut out = Map::new();
    let (decision, reason_text, arguments) = match v.decision {
        Decision::Allow => ("allow", reason(v), None),
        Decision::Deny => ("deny", reason(v), None),
        Decision::StepUp => ("step_up", reason(v), None),
        Decision::Defer => ("defer", reason(v), None),
        Decision::Modify => match modified_parameters(v) {
            Some(params) => ("modify", reason(v), Some(params)),
            // A rewrite the gateway cannot apply must not run the original.
            None => ("deny", unusable_modify_reason(v), None),
        },
    };
    out.insert("decision".to_owned(), Value::String(decision.to_owned()));
    out.insert("reason".to_owned(), Value::String(reason_text));
    if let Some(arguments) = arguments {
        out.insert("arguments".to_owned(), Value::Object(arguments));
    }
    if let Some(id) = &v.receipt_id {
        out.insert("receipt_id".to_owned(), Value::String(id.clone()));
    }
    if v.fault {
        out.insert("fault".to_owned(), Value::Bool(true));
    }
    Value::Object(out)
}
