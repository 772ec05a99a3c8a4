//! Guest SDK for Arbiter adapter plugins.
//!
//! An adapter turns one vendor's governance-hook request into canonical
//! events and the host's verdict back into the vendor's reply. With this
//! crate an adapter is a plain Rust type implementing [`Adapter`] plus one
//! [`export_adapter!`] line; built with `cargo build --target wasm32-wasip2`
//! it becomes a component of the `arbiter:plugin/adapter@0.1.0` world.
//!
//! Natively (any target but wasm32) no bindings are generated: the host
//! imports in [`log`], [`config`] and [`clock`] are served by a test double,
//! and the native-only `testing` module runs an adapter against fixture
//! files, so adapters are tested with a plain `cargo test`.
//!
//! ```
//! use arbiter_sdk::{Adapter, Decision, DecodeError, Decoded, Event, HttpRequest,
//!                   HttpResponse, Lifecycle, PluginInfo, Requester, Verdict};
//!
//! struct Echo;
//!
//! impl Adapter for Echo {
//!     fn describe() -> PluginInfo {
//!         PluginInfo {
//!             name: "echo".into(),
//!             vendor: "Example".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!             vendor_versions: vec!["1.x".into()],
//!             decisions: vec![Decision::Allow, Decision::Deny],
//!             events: vec!["ping".into()],
//!             blocking_reply: HttpResponse::json(200, r#"{"ok":false,"reason":"{{reason}}"}"#),
//!         }
//!     }
//!
//!     fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError> {
//!         let session = arbiter_sdk::config::get("session")
//!             .ok_or_else(|| DecodeError::Malformed("no `session` setting".into()))?;
//!         arbiter_sdk::log::debug(&format!("{} bytes", req.body.len()));
//!         Ok(Decoded {
//!             requester: Requester { session, attributes_json: "{}".into(), ..Default::default() },
//!             events: vec![Event::Other(Lifecycle { event_kind: "ping".into(), detail_json: "{}".into() })],
//!         })
//!     }
//!
//!     fn encode(_req: &HttpRequest, verdict: &Verdict) -> HttpResponse {
//!         HttpResponse::json(200, format!(r#"{{"ok":{}}}"#, verdict.decision == Decision::Allow))
//!     }
//! }
//!
//! arbiter_sdk::export_adapter!(Echo);
//!
//! arbiter_sdk::testing::set_setting("session", "s-1");
//! let decoded = Echo::decode(&arbiter_sdk::testing::json_request("{}")).unwrap();
//! assert_eq!(decoded.requester.session, "s-1");
//! ```

// Lets the generated bindings name this crate by its absolute path, which is
// also how they name it when the export macro expands in an adapter crate.
extern crate self as arbiter_sdk;

mod host;
mod types;

pub use host::{clock, config, log};
pub use types::{
    Action, Decision, DecodeError, Decoded, Event, HttpRequest, HttpResponse, Intent, Lifecycle, Observation,
    PluginInfo, Requester, Verdict,
};

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// Not public API: used by [`export_adapter!`].
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[path = "glue.rs"]
pub mod __private;

/// One vendor's adapter: the plugin's whole behaviour.
///
/// Each call gets a fresh instance in the host, so implementations keep no
/// state between calls. They must not panic on any input: a panic traps the
/// instance, and the host then answers with [`PluginInfo::blocking_reply`]
/// and records a plugin fault.
pub trait Adapter {
    /// Describes the plugin. Called once when the host loads it.
    fn describe() -> PluginInfo;

    /// Turns a vendor request into canonical events.
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] when the body is not what the vendor sends,
    /// [`DecodeError::Unsupported`] for a well-formed event the adapter does
    /// not handle. The host blocks the request in both cases.
    fn decode(req: &HttpRequest) -> Result<Decoded, DecodeError>;

    /// Turns the host's verdict on `req` into the vendor's reply.
    fn encode(req: &HttpRequest, verdict: &Verdict) -> HttpResponse;
}

/// Exports an [`Adapter`] implementation as the component's `describe`,
/// `decode` and `encode` functions.
///
/// Use it once per plugin crate, at the crate root:
///
/// ```ignore
/// arbiter_sdk::export_adapter!(MyAdapter);
/// ```
///
/// It expands to nothing outside wasm32, so the crate still builds and tests
/// natively.
#[macro_export]
macro_rules! export_adapter {
    ($adapter:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ArbiterExport;

            impl $crate::__private::Guest for ArbiterExport {
                fn describe() -> $crate::__private::PluginInfo {
                    $crate::__private::describe::<$adapter>()
                }

                fn decode(
                    request: $crate::__private::HttpRequest,
                ) -> ::core::result::Result<$crate::__private::Decoded, $crate::__private::DecodeError> {
                    $crate::__private::decode::<$adapter>(request)
                }

                fn encode(
                    request: $crate::__private::HttpRequest,
                    verdict: $crate::__private::Verdict,
                ) -> $crate::__private::HttpResponse {
                    $crate::__private::encode::<$adapter>(request, verdict)
                }
            }

            $crate::__private::bindings::__arbiter_export_raw!(
                ArbiterExport with_types_in $crate::__private::bindings
            );
        };
    };
}
