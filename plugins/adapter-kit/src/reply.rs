//! Building replies: reasons, degraded decisions, rewritten input.

use arbiter_sdk::{Decision, HttpResponse, Verdict};
use serde_json::{Map, Value};

/// Shown when a verdict carries no reason: some vendors (Codex) treat a deny
/// without a reason as a failed hook and run the tool.
const FALLBACK_BLOCK: &str = "blocked by Arbiter policy";
const FALLBACK_ALLOW: &str = "allowed by Arbiter policy";
const FALLBACK_MODIFY: &str = "rewritten by Arbiter policy";

/// The phrase the host's own hold reasons end with; a reason that has it
/// already tells the agent how to retry.
const HOST_RETRY_PHRASE: &str = "retry exactly the same action";

/// HTTP 200 with `body` as JSON. Every adapter answers 200: vendors ignore or
/// misread other statuses (Claude Code runs the tool, Copilot treats a 5xx as
/// a hook error).
pub fn json_reply(body: &Value) -> HttpResponse {
    HttpResponse::json(200, body.to_string())
}

/// True for the decisions that must not let the action run unchanged now:
/// DENY, DEFER and STEP_UP (which these vendors cannot hold open).
pub fn blocks(v: &Verdict) -> bool {
    matches!(v.decision, Decision::Deny | Decision::Defer | Decision::StepUp)
}

/// `text` with the receipt id appended, so a user can find the record.
pub fn with_receipt(mut text: String, v: &Verdict) -> String {
    if let Some(id) = &v.receipt_id {
        text.push_str(" [arbiter receipt ");
        text.push_str(id);
        text.push(']');
    }
    text
}

/// The verdict's reason for the agent: never empty, with the receipt id.
/// STEP_UP and DEFER get [`held_reason`].
pub fn reason(v: &Verdict) -> String {
    match v.decision {
        Decision::StepUp | Decision::Defer => held_reason(v),
        _ => with_receipt(base_reason(v).to_owned(), v),
    }
}

fn base_reason(v: &Verdict) -> &str {
    match (v.reason.trim(), v.decision) {
        ("", Decision::Allow) => FALLBACK_ALLOW,
        ("", Decision::Modify) => FALLBACK_MODIFY,
        ("", _) => FALLBACK_BLOCK,
        (r, _) => r,
    }
}

/// The deny reason a STEP_UP or DEFER degrades to where the vendor cannot
/// wait or ask: the action did not run, it awaits approval (STEP_UP) or
/// evidence (DEFER), and the agent should retry the identical action later.
/// The host's reason (which names the approval or deferral id) is kept; when
/// it already says how to retry, that is not repeated.
pub fn held_reason(v: &Verdict) -> String {
    let r = base_reason(v);
    let says_retry = r.contains(HOST_RETRY_PHRASE);
    let text = match (v.decision, says_retry) {
        (Decision::Defer, true) => format!("deferred: {r}"),
        (Decision::Defer, false) => {
            format!("deferred: {r}. The action did not run; it awaits evidence: {HOST_RETRY_PHRASE} later")
        }
        (_, true) => format!("approval required: {r}"),
        (_, false) => format!(
            "approval required: {r}. The action did not run; it awaits approval: {HOST_RETRY_PHRASE} \
             once it is approved"
        ),
    };
    with_receipt(text, v)
}

/// The full replacement input of a MODIFY verdict, if it is a JSON object.
pub fn modified_parameters(v: &Verdict) -> Option<Map<String, Value>> {
    match serde_json::from_str(v.modified_parameters_json.as_deref()?).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// A MODIFY whose parameters cannot be applied must not run the original
/// input unchanged, so it becomes a deny that says why.
pub fn unusable_modify_reason(v: &Verdict) -> String {
    with_receipt(format!("modify verdict without usable modified parameters: {}", base_reason(v)), v)
}

/// `rewritten` as a patch for a vendor that *merges* a hook's input into the
/// original (Gemini CLI: `Object.assign`): every key of `original` that the
/// rewrite drops is set to `null`, so the merged input cannot keep a value
/// the policy removed (a tool either treats `null` as absent or rejects it).
pub fn modify_as_merge(rewritten: Map<String, Value>, original: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut patch = rewritten;
    for key in original.into_iter().flat_map(Map::keys) {
        if !patch.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verdict(decision: Decision, reason: &str, receipt: Option<&str>) -> Verdict {
        Verdict {
            decision,
            reason: reason.to_owned(),
            receipt_id: receipt.map(str::to_owned),
            modified_parameters_json: None,
            fault: false,
            decided: true,
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(reason(&verdict(Decision::Deny, "no", Some("r1"))), "no [arbiter receipt r1]");
        assert_eq!(reason(&verdict(Decision::Deny, "  ", None)), "blocked by Arbiter policy");
        assert_eq!(reason(&verdict(Decision::Allow, "", None)), "allowed by Arbiter policy");
        assert_eq!(reason(&verdict(Decision::Modify, "", None)), "rewritten by Arbiter policy");
        assert_eq!(
            reason(&verdict(Decision::StepUp, "prod deploy", None)),
            "approval required: prod deploy. The action did not run; it awaits approval: retry exactly the same \
             action once it is approved"
        );
        assert_eq!(
            reason(&verdict(Decision::Defer, "needs a ticket", Some("r2"))),
            "deferred: needs a ticket. The action did not run; it awaits evidence: retry exactly the same action \
             later [arbiter receipt r2]"
        );
        let host = "ticket missing; deferral `def-1` waits for that evidence: retry exactly the same action later";
        assert_eq!(reason(&verdict(Decision::Defer, host, None)), format!("deferred: {host}"));
    }

    #[test]
    fn merge_patch_nulls_dropped_keys() {
        let original = json!({"command": "rm -rf /", "dir_path": "/", "description": "x"});
        let rewritten = json!({"command": "ls", "description": "x"});
        let patch = modify_as_merge(rewritten.as_object().unwrap().clone(), original.as_object());
        assert_eq!(Value::Object(patch), json!({"command": "ls", "description": "x", "dir_path": null}));
    }
}
