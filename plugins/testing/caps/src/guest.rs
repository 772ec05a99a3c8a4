// The guest itself, shared with `caps-twin` through `include!` (so no inner
// doc comments here).

wit_bindgen::generate!({
    path: "../../../wit/plugin/v0.2.0",
    world: "adapter",
});

use arbiter::plugin::capabilities::CapabilityError;
use arbiter::plugin::types::{Action, Decision, Event, Requester};
use arbiter::plugin::{http, kv, plugin_config, secrets};
use serde_json::{Value, json};

struct Caps;

fn name() -> String {
    env!("CARGO_PKG_NAME").trim_start_matches("arbiter-plugin-").to_owned()
}

fn body(req: &HttpRequest) -> Result<Value, DecodeError> {
    serde_json::from_slice(&req.body).map_err(|e| DecodeError::Malformed(format!("not JSON: {e}")))
}

fn field(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn err(e: CapabilityError) -> Value {
    let (kind, message) = match e {
        CapabilityError::NotGranted(m) => ("not-granted", m),
        CapabilityError::Denied(m) => ("denied", m),
        CapabilityError::Limit(m) => ("limit", m),
        CapabilityError::Failed(m) => ("failed", m),
    };
    json!({"err": {"kind": kind, "message": message}})
}

fn outcome<T>(result: Result<T, CapabilityError>, ok: impl FnOnce(T) -> Value) -> Value {
    match result {
        Ok(v) => json!({"ok": ok(v)}),
        Err(e) => err(e),
    }
}

/// 64-bit FNV-1a of `s`, as 16 hex digits.
fn fnv1a(s: &str) -> String {
    let hash = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

fn perform(v: &Value) -> Value {
    match field(v, "op").as_str() {
        "http" => {
            let method = v.get("method").and_then(Value::as_str).unwrap_or("GET").to_owned();
            let request = http::Request { method, url: field(v, "url"), headers: Vec::new(), body: Vec::new() };
            outcome(http::fetch(&request), |r| json!({"status": r.status, "body": String::from_utf8_lossy(&r.body)}))
        }
        "kv-get" => outcome(kv::get(&field(v, "key")), |r| {
            r.map_or(Value::Null, |b| Value::String(String::from_utf8_lossy(&b).into_owned()))
        }),
        "kv-set" => outcome(kv::set(&field(v, "key"), field(v, "value").as_bytes()), |()| Value::Null),
        "kv-delete" => outcome(kv::delete(&field(v, "key")), |()| Value::Null),
        "kv-list" => outcome(kv::list_prefix(&field(v, "prefix")), |keys| json!(keys)),
        "config" => outcome(plugin_config::get(&field(v, "key")), |r| json!(r)),
        // The reply (which the host records in the receipt) proves the value
        // was read without carrying it.
        "secret" => outcome(secrets::get(&field(v, "name")), |s| json!({"fnv1a": fnv1a(&s), "len": s.len()})),
        other => json!({"err": {"kind": "unknown-op", "message": other}}),
    }
}

impl Guest for Caps {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: name(),
            vendor: "Arbiter capability tests".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            vendor_versions: vec!["test".to_owned()],
            decisions: vec![Decision::Allow, Decision::Deny],
            events: vec!["caps".to_owned()],
            blocking_reply: HttpResponse {
                status: 200,
                headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                body: br#"{"decision":"deny","reason":"{{reason}}","blocked":true}"#.to_vec(),
            },
        }
    }

    fn decode(request: HttpRequest) -> Result<Decoded, DecodeError> {
        let v = body(&request)?;
        let session = field(&v, "session_id");
        if session.is_empty() {
            return Err(DecodeError::Malformed("no `session_id`".to_owned()));
        }
        Ok(Decoded {
            requester: Requester {
                session,
                human: None,
                agent: Some(name()),
                service: Some(name()),
                roles: Vec::new(),
                scope: Vec::new(),
                delegation_chain: Vec::new(),
                attributes_json: "{}".to_owned(),
            },
            events: vec![Event::Action(Action {
                tool: "shell".to_owned(),
                operation: "exec".to_owned(),
                parameters_json: json!({"command": "ls", "op": field(&v, "op")}).to_string(),
                resource: None,
                original_tool: "shell".to_owned(),
                event_kind: "caps".to_owned(),
                call_id: None,
            })],
        })
    }

    fn encode(request: HttpRequest, verdict: Verdict) -> HttpResponse {
        let result = body(&request).map_or_else(|_| json!({"err": {"kind": "bad-request"}}), |v| perform(&v));
        let decision = match verdict.decision {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Modify => "modify",
            Decision::StepUp => "step-up",
            Decision::Defer => "defer",
        };
        HttpResponse {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: json!({"decision": decision, "result": result}).to_string().into_bytes(),
        }
    }
}

export!(Caps);
