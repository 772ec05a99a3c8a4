//! The `caps` test plugin built a second time: its name comes from the
//! crate name, so this one describes itself as `caps-twin`. The host's tests
//! use the pair to show that capabilities and key-value namespaces belong to
//! one plugin name.

#[cfg(target_arch = "wasm32")]
#[allow(clippy::too_many_arguments, reason = "generated bindings; the lint fires only for some wit-bindgen versions")]
mod guest {
    include!("../../caps/src/guest.rs");
}
