//! wasm32 only: the generated bindings, and the moves between them and the
//! plain types of this crate. Used by [`export_adapter!`](crate::export_adapter).

pub use wit_bindgen;

/// Bindings for the `arbiter:plugin/adapter@0.1.0` world.
#[expect(missing_docs, reason = "generated code")]
#[allow(clippy::too_many_arguments, reason = "generated code; the lint fires only for some wit-bindgen versions")]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/plugin/v0.1.0",
        world: "adapter",
        // The export macro is expanded in the adapter's crate, so it must be
        // reachable from there and name this module by its absolute path.
        pub_export_macro: true,
        export_macro_name: "__arbiter_export_raw",
        default_bindings_module: "arbiter_sdk::__private::bindings",
        runtime_path: "arbiter_sdk::__private::wit_bindgen::rt",
    });
}

use crate::Adapter;
use crate::types as plain;
use bindings::arbiter::plugin::types as wit;

pub use bindings::Guest;
pub use wit::{DecodeError, Decoded, HttpRequest, HttpResponse, PluginInfo, Verdict};

/// `describe` export body for adapter `A`.
pub fn describe<A: Adapter>() -> PluginInfo {
    let info = A::describe();
    PluginInfo {
        name: info.name,
        vendor: info.vendor,
        version: info.version,
        vendor_versions: info.vendor_versions,
        decisions: info.decisions.into_iter().map(decision_to_wit).collect(),
        events: info.events,
        blocking_reply: response_to_wit(info.blocking_reply),
    }
}

/// `decode` export body for adapter `A`.
pub fn decode<A: Adapter>(request: HttpRequest) -> Result<Decoded, DecodeError> {
    match A::decode(&request_from_wit(request)) {
        Ok(decoded) => Ok(Decoded {
            requester: requester_to_wit(decoded.requester),
            events: decoded.events.into_iter().map(event_to_wit).collect(),
        }),
        Err(plain::DecodeError::Malformed(m)) => Err(DecodeError::Malformed(m)),
        Err(plain::DecodeError::Unsupported(m)) => Err(DecodeError::Unsupported(m)),
    }
}

/// `encode` export body for adapter `A`.
pub fn encode<A: Adapter>(request: HttpRequest, verdict: Verdict) -> HttpResponse {
    let verdict = plain::Verdict {
        decision: decision_from_wit(verdict.decision),
        reason: verdict.reason,
        receipt_id: verdict.receipt_id,
        modified_parameters_json: verdict.modified_parameters_json,
        fault: verdict.fault,
        decided: verdict.decided,
    };
    response_to_wit(A::encode(&request_from_wit(request), &verdict))
}

fn request_from_wit(r: HttpRequest) -> plain::HttpRequest {
    plain::HttpRequest { method: r.method, path: r.path, headers: r.headers, body: r.body }
}

fn response_to_wit(r: plain::HttpResponse) -> HttpResponse {
    HttpResponse { status: r.status, headers: r.headers, body: r.body }
}

fn decision_to_wit(d: plain::Decision) -> wit::Decision {
    match d {
        plain::Decision::Allow => wit::Decision::Allow,
        plain::Decision::Deny => wit::Decision::Deny,
        plain::Decision::Modify => wit::Decision::Modify,
        plain::Decision::StepUp => wit::Decision::StepUp,
        plain::Decision::Defer => wit::Decision::Defer,
    }
}

fn decision_from_wit(d: wit::Decision) -> plain::Decision {
    match d {
        wit::Decision::Allow => plain::Decision::Allow,
        wit::Decision::Deny => plain::Decision::Deny,
        wit::Decision::Modify => plain::Decision::Modify,
        wit::Decision::StepUp => plain::Decision::StepUp,
        wit::Decision::Defer => plain::Decision::Defer,
    }
}

fn requester_to_wit(r: plain::Requester) -> wit::Requester {
    wit::Requester {
        session: r.session,
        human: r.human,
        agent: r.agent,
        service: r.service,
        roles: r.roles,
        scope: r.scope,
        delegation_chain: r.delegation_chain,
        attributes_json: r.attributes_json,
    }
}

fn lifecycle_to_wit(l: plain::Lifecycle) -> wit::Lifecycle {
    wit::Lifecycle { event_kind: l.event_kind, detail_json: l.detail_json }
}

fn event_to_wit(e: plain::Event) -> wit::Event {
    match e {
        plain::Event::Intent(i) => wit::Event::Intent(wit::Intent { text: i.text, event_kind: i.event_kind }),
        plain::Event::Action(a) => wit::Event::Action(wit::Action {
            tool: a.tool,
            operation: a.operation,
            parameters_json: a.parameters_json,
            resource: a.resource,
            original_tool: a.original_tool,
            event_kind: a.event_kind,
            call_id: a.call_id,
        }),
        plain::Event::Observation(o) => wit::Event::Observation(wit::Observation {
            original_tool: o.original_tool,
            tool: o.tool,
            operation: o.operation,
            output_json: o.output_json,
            event_kind: o.event_kind,
            call_id: o.call_id,
        }),
        plain::Event::SessionStart(l) => wit::Event::SessionStart(lifecycle_to_wit(l)),
        plain::Event::SessionEnd(l) => wit::Event::SessionEnd(lifecycle_to_wit(l)),
        plain::Event::Other(l) => wit::Event::Other(lifecycle_to_wit(l)),
    }
}
