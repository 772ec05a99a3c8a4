//! A deliberately misbehaving adapter for the host's plugin fault tests.
//! Never bundled: the host's tests load it from the path in
//! `ARBITER_TEST_PLUGIN_FAULTY`.
//!
//! `decode` reads `{"fault": "...", "session_id": "..."}` and misbehaves as
//! told:
//!
//! | fault | behaviour |
//! |---|---|
//! | `none` | one well-formed action: `shell`/`exec` with `{"command":"ls"}` |
//! | `trap` | panics, which traps the instance |
//! | `loop` | spins forever, calling the clock import on every turn |
//! | `memory` | grows memory in 8 MiB blocks, keeping them all, until allocation fails |
//! | `malformed` | an action whose `parameters-json` is not JSON |
//! | `encode-trap` | decodes like `none`, then `encode` panics |
//!
//! `encode` otherwise answers 200 with
//! `{"decision": "<allow|deny|modify|step-up|defer>", "reason": ..., "receipt_id": ...}`.

use arbiter_sdk::{
    Action, Adapter, Decision, DecodeError, Decoded, Event, HttpRequest, HttpResponse, PluginInfo, Requester, Verdict,
};
use serde_json::{Value, json};

/// Reply used when the host cannot get one from the plugin.
pub const BLOCKING_REPLY: &str = r#"{"decision":"deny","reason":"{{reason}}","blocked":true}"#;

/// Every fault `decode` understands.
pub const FAULTS: &[&str] = &["none", "trap", "loop", "memory", "malformed", "encode-trap"];

/// Size of each block the `memory` fault allocates. Large blocks reach any
/// cap in a few `memory.grow` calls, so the fault is the memory cap and never
/// the deadline, however loaded the machine is.
const MEMORY_BLOCK: usize = 8 << 20;

/// The faulty adapter.
pub struct Faulty;

impl Adapter for Faulty {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "faulty".to_owned(),
            vendor: "Arbiter fault tests".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: vec!["test".to_owned()],
            decisions: vec![Decision::Allow, Decision::Deny, Decision::Modify, Decision::StepUp, Decision::Defer],
            events: vec!["fault".to_owned()],
            blocking_reply: HttpResponse::json(200, BLOCKING_REPLY),
        }
    }

    fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
        let (fault, session) = parse(&req.body)?;
        let parameters_json = match fault.as_str() {
            "none" | "encode-trap" => json!({"command": "ls"}).to_string(),
            "malformed" => "{\"command\": \"ls\"".to_owned(),
            "trap" => trap("decode"),
            "loop" => spin(),
            "memory" => exhaust_memory(),
            other => {
                return Err(DecodeError::Malformed(format!("unknown fault `{other}`; expected one of {FAULTS:?}")));
            }
        };
        Ok(Decoded {
            requester: Requester {
                session,
                agent: Some("faulty".to_owned()),
                service: Some("faulty".to_owned()),
                attributes_json: "{}".to_owned(),
                ..Requester::default()
            },
            events: vec![Event::Action(Action {
                tool: "shell".to_owned(),
                operation: "exec".to_owned(),
                parameters_json,
                resource: None,
                original_tool: "shell".to_owned(),
                event_kind: "fault".to_owned(),
                call_id: None,
            })],
        })
    }

    fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
        if matches!(parse(&req.body), Ok((fault, _)) if fault == "encode-trap") {
            trap("encode");
        }
        let body = json!({
            "decision": verdict.decision.as_str(),
            "reason": verdict.reason,
            "receipt_id": verdict.receipt_id,
        });
        HttpResponse::json(200, body.to_string())
    }
}

arbiter_sdk::export_adapter!(Faulty);

/// `(fault, session_id)` from the request body.
fn parse(body: &[u8]) -> Result<(String, String), DecodeError> {
    let malformed = |m: &str| DecodeError::Malformed(m.to_owned());
    let Value::Object(mut body) =
        serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(format!("body is not valid JSON: {e}")))?
    else {
        return Err(malformed("body is not a JSON object"));
    };
    let Some(Value::String(fault)) = body.remove("fault") else {
        return Err(malformed("`fault` is missing or not a string"));
    };
    let Some(Value::String(session)) = body.remove("session_id") else {
        return Err(malformed("`session_id` is missing or not a string"));
    };
    Ok((fault, session))
}

#[expect(clippy::panic, reason = "a trap is this fault's whole purpose")]
fn trap(during: &str) -> ! {
    panic!("faulty plugin: deliberate trap during {during}")
}

/// Never returns. The clock import on every turn is an observable side
/// effect, so the optimiser cannot delete the loop, and it gives the host's
/// epoch interruption a call boundary to act on.
fn spin() -> ! {
    loop {
        std::hint::black_box(arbiter_sdk::clock::now_millis());
    }
}

/// Never returns: allocates until the allocator fails, which aborts (traps).
/// Every block is kept alive, so linear memory — what the host caps — only
/// grows. Blocks are not touched page by page: that would spend the call's
/// time budget on page faults, and a loaded machine would then report a
/// deadline instead of the memory cap.
fn exhaust_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; MEMORY_BLOCK];
        if let Some(first) = block.first_mut() {
            *first = 1;
        }
        blocks.push(std::hint::black_box(block));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbiter_sdk::testing;

    fn request(fault: &str) -> HttpRequest {
        testing::json_request(json!({"fault": fault, "session_id": "s-1"}).to_string())
    }

    fn only_action(d: &Decoded) -> &Action {
        match d.events.as_slice() {
            [Event::Action(a)] => a,
            other => panic!("expected one action, got {other:?}"),
        }
    }

    // `none` decodes to one well-formed shell action.
    #[test]
    fn none_is_a_well_formed_action() {
        let d = Faulty::decode(&request("none")).unwrap();
        assert_eq!(d.requester.session, "s-1");
        let a = only_action(&d);
        assert_eq!((a.tool.as_str(), a.operation.as_str()), ("shell", "exec"));
        let params: Value = serde_json::from_str(&a.parameters_json).unwrap();
        assert_eq!(params, json!({"command": "ls"}));
    }

    // `malformed` yields parameters that are not JSON.
    #[test]
    fn malformed_parameters_are_not_json() {
        let d = Faulty::decode(&request("malformed")).unwrap();
        assert!(serde_json::from_str::<Value>(&only_action(&d).parameters_json).is_err());
    }

    // `trap` panics in decode; `encode-trap` decodes fine and panics in encode.
    #[test]
    fn traps() {
        assert!(std::panic::catch_unwind(|| Faulty::decode(&request("trap"))).is_err());
        let req = request("encode-trap");
        assert!(Faulty::decode(&req).is_ok());
        let v = testing::verdict(Decision::Allow, "ok");
        assert!(std::panic::catch_unwind(|| Faulty::encode(&req, &v)).is_err());
    }

    // encode reports the verdict as JSON.
    #[test]
    fn encode_reports_the_verdict() {
        let mut v = testing::verdict(Decision::StepUp, "why");
        v.receipt_id = Some("r-1".to_owned());
        let reply = testing::encode_json::<Faulty>(&request("none"), &v).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, json!({"decision": "step-up", "reason": "why", "receipt_id": "r-1"}));
    }

    // Unknown faults and bad bodies are malformed.
    #[test]
    fn bad_requests_are_malformed() {
        for body in [r#"{"fault":"nope","session_id":"s"}"#, r#"{"fault":"none"}"#, "[]", "x"] {
            assert!(matches!(Faulty::decode(&testing::json_request(body)), Err(DecodeError::Malformed(_))), "{body}");
        }
    }

    // The blocking reply is JSON with the `{{reason}}` slot.
    #[test]
    fn blocking_reply_shape() {
        let info = Faulty::describe();
        assert_eq!(info.name, "faulty");
        let body: Value = serde_json::from_slice(&info.blocking_reply.body).unwrap();
        assert_eq!(body, json!({"decision": "deny", "reason": "{{reason}}", "blocked": true}));
    }
}
