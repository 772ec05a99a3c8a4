//! An `arbiter:plugin@0.2.0` adapter for the host's capability tests. Never
//! bundled: the tests load it from `ARBITER_TEST_PLUGIN_CAPS` (and its twin
//! from `ARBITER_TEST_PLUGIN_CAPS_TWIN`). The plugin's name is its crate name
//! without `arbiter-plugin-`.
//!
//! `decode` reads `{"session_id": "...", "op": "..."}` and returns one
//! `shell`/`exec` action; `encode` then performs the op and answers 200 with
//! `{"decision": ..., "result": {"ok": ...} | {"err": {"kind", "message"}}}`:
//!
//! | op | fields | capability call |
//! |---|---|---|
//! | `http` | `url`, `method` | `http.fetch`; ok = `{"status", "body"}` |
//! | `kv-get` | `key` | `kv.get`; ok = the value as a string, or null |
//! | `kv-set` | `key`, `value` | `kv.set` |
//! | `kv-delete` | `key` | `kv.delete` |
//! | `kv-list` | `prefix` | `kv.list-prefix` |
//! | `config` | `key` | `plugin-config.get` |
//! | `secret` | `name` | `secrets.get`; ok = `{"fnv1a", "len"}` of the secret, not the secret |
//!
//! Natively this crate is empty: it exists only as a component.

#[cfg(target_arch = "wasm32")]
#[allow(clippy::too_many_arguments, reason = "generated bindings; the lint fires only for some wit-bindgen versions")]
mod guest {
    include!("guest.rs");
}
