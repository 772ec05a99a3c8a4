//! Wrappers over the host imports (`log`, `config`, `clock`).
//!
//! On wasm32 they call the host; natively they call the test double in
//! [`crate::testing`], so adapter code runs unchanged under `cargo test`.

/// Structured logging into the host's log.
///
/// The host truncates messages (4 KiB) and rate-limits them per call, so log
/// what an operator needs to diagnose a request, not the whole payload.
pub mod log {
    /// Severity of a log message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Level {
        /// Very detailed tracing.
        Trace,
        /// Debugging detail.
        Debug,
        /// Normal operation.
        Info,
        /// Something unexpected that the plugin handled.
        Warn,
        /// Something the plugin could not handle.
        Error,
    }

    /// Logs `message` at `level`.
    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        {
            use crate::__private::bindings::arbiter::plugin::log as wit;
            let level = match level {
                Level::Trace => wit::Level::Trace,
                Level::Debug => wit::Level::Debug,
                Level::Info => wit::Level::Info,
                Level::Warn => wit::Level::Warn,
                Level::Error => wit::Level::Error,
            };
            wit::log(level, message);
        }
        #[cfg(not(target_arch = "wasm32"))]
        crate::testing::double::log(level, message);
    }

    /// Logs `message` at [`Level::Trace`].
    pub fn trace(message: &str) {
        log(Level::Trace, message);
    }

    /// Logs `message` at [`Level::Debug`].
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }

    /// Logs `message` at [`Level::Info`].
    pub fn info(message: &str) {
        log(Level::Info, message);
    }

    /// Logs `message` at [`Level::Warn`].
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }

    /// Logs `message` at [`Level::Error`].
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

/// Read-only settings of the integration the current call serves.
pub mod config {
    /// The value of `key` in the integration's `settings` table, if set.
    ///
    /// Natively this reads the thread-local map set with
    /// `testing::set_setting`.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::__private::bindings::arbiter::plugin::config::get(key)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::double::setting(key)
        }
    }
}

/// Wall-clock time as the host sees it.
pub mod clock {
    /// Milliseconds since the Unix epoch.
    ///
    /// Natively this is the system clock (0 if it is set before 1970).
    pub fn now_millis() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::__private::bindings::arbiter::plugin::clock::now_millis()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::double::now_millis()
        }
    }
}
