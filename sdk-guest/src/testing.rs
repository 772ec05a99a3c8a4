//! Native test support: the host-import test double and fixture helpers.
//!
//! Only compiled outside wasm32. Settings and captured logs are thread-local,
//! and `cargo test` runs each test on its own thread, so tests do not see
//! each other's settings.
//!
//! ```
//! use arbiter_sdk::testing;
//!
//! testing::set_setting("human", "alice@example.com");
//! assert_eq!(arbiter_sdk::config::get("human").as_deref(), Some("alice@example.com"));
//! testing::clear_settings();
//! assert_eq!(arbiter_sdk::config::get("human"), None);
//! ```

use std::path::{Path, PathBuf};

use crate::log::Level;
use crate::{Adapter, Decision, DecodeError, Decoded, HttpRequest, HttpResponse, Verdict};

/// What can go wrong while running an adapter against a fixture.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// A fixture file or directory could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The adapter refused the request.
    #[error("decode failed: {0}")]
    Decode(DecodeError),
    /// The adapter's reply body is not JSON.
    #[error("reply body is not JSON: {0}")]
    ReplyNotJson(serde_json::Error),
}

/// Sets the integration setting `key` (read by [`config::get`](crate::config::get))
/// for the current thread.
pub fn set_setting(key: impl Into<String>, value: impl Into<String>) {
    double::SETTINGS.with(|s| {
        s.borrow_mut().insert(key.into(), value.into());
    });
}

/// Removes the integration setting `key` for the current thread.
pub fn remove_setting(key: &str) {
    double::SETTINGS.with(|s| {
        s.borrow_mut().remove(key);
    });
}

/// Removes every integration setting for the current thread.
pub fn clear_settings() {
    double::SETTINGS.with(|s| s.borrow_mut().clear());
}

/// Returns and forgets the messages logged on the current thread, oldest
/// first. Keeps at most the first [`MAX_CAPTURED_LOGS`] of them.
pub fn take_logs() -> Vec<(Level, String)> {
    double::LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

/// Cap on captured log lines per thread, so a test that logs in a loop
/// cannot exhaust memory; later lines still go to stderr.
pub const MAX_CAPTURED_LOGS: usize = 10_000;

/// A `POST` request to the integration's hook route with `body` and
/// `content-type: application/json`, as the host hands it to `decode`.
pub fn json_request(body: impl Into<Vec<u8>>) -> HttpRequest {
    HttpRequest {
        method: "POST".to_owned(),
        path: String::new(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: body.into(),
    }
}

/// [`json_request`] with the bytes of the fixture file at `path`.
///
/// # Errors
/// [`TestingError::Io`] when the file cannot be read.
pub fn fixture_request(path: impl AsRef<Path>) -> Result<HttpRequest, TestingError> {
    let path = path.as_ref();
    let body = std::fs::read(path).map_err(|source| TestingError::Io { path: path.to_owned(), source })?;
    Ok(json_request(body))
}

/// Every `*.json` file directly in `dir`, sorted by name.
///
/// # Errors
/// [`TestingError::Io`] when the directory cannot be listed.
pub fn fixture_paths(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, TestingError> {
    let dir = dir.as_ref();
    let io = |source| TestingError::Io { path: dir.to_owned(), source };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Runs `A::decode` on the fixture file at `path`.
///
/// # Errors
/// [`TestingError::Io`] when the file cannot be read, [`TestingError::Decode`]
/// when the adapter refuses it.
pub fn decode_fixture<A: Adapter>(path: impl AsRef<Path>) -> Result<Decoded, TestingError> {
    A::decode(&fixture_request(path)?).map_err(TestingError::Decode)
}

/// A verdict on a decision point (`decided = true`) with no receipt, no
/// modified parameters and no fault. Change the public fields for other cases.
pub fn verdict(decision: Decision, reason: &str) -> Verdict {
    Verdict {
        decision,
        reason: reason.to_owned(),
        receipt_id: None,
        modified_parameters_json: None,
        fault: false,
        decided: true,
    }
}

/// A reply from [`encode_json`] with its body parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonReply {
    /// HTTP status code.
    pub status: u16,
    /// The value of the `content-type` header, if any.
    pub content_type: Option<String>,
    /// The parsed body.
    pub body: serde_json::Value,
    /// The reply as the adapter returned it.
    pub response: HttpResponse,
}

/// Runs `A::encode` and parses the reply body as JSON.
///
/// # Errors
/// [`TestingError::ReplyNotJson`] when the body is not JSON.
pub fn encode_json<A: Adapter>(req: &HttpRequest, verdict: &Verdict) -> Result<JsonReply, TestingError> {
    let response = A::encode(req, verdict);
    let body = serde_json::from_slice(&response.body).map_err(TestingError::ReplyNotJson)?;
    let content_type =
        response.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-type")).map(|(_, v)| v.clone());
    Ok(JsonReply { status: response.status, content_type, body, response })
}

/// The native stand-in for the host imports.
pub(crate) mod double {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::MAX_CAPTURED_LOGS;
    use crate::log::Level;

    thread_local! {
        pub(super) static SETTINGS: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
        pub(super) static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn log(level: Level, message: &str) {
        eprintln!("[plugin {level:?}] {message}");
        LOGS.with(|l| {
            let mut l = l.borrow_mut();
            if l.len() < MAX_CAPTURED_LOGS {
                l.push((level, message.to_owned()));
            }
        });
    }

    pub(crate) fn setting(key: &str) -> Option<String> {
        SETTINGS.with(|s| s.borrow().get(key).cloned())
    }

    pub(crate) fn now_millis() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Settings set on one thread are invisible on another.
    #[test]
    fn settings_are_thread_local() {
        set_setting("human", "alice");
        assert_eq!(crate::config::get("human").as_deref(), Some("alice"));
        let other = std::thread::spawn(|| crate::config::get("human")).join().unwrap();
        assert_eq!(other, None);
        remove_setting("human");
        assert_eq!(crate::config::get("human"), None);
    }

    // Logged messages are captured in order and taken once.
    #[test]
    fn logs_are_captured() {
        crate::log::info("one");
        crate::log::warn("two");
        assert_eq!(take_logs(), vec![(Level::Info, "one".to_owned()), (Level::Warn, "two".to_owned())]);
        assert!(take_logs().is_empty());
    }

    // The clock double reads the system clock (after 2020-01-01).
    #[test]
    fn clock_is_wall_clock() {
        assert!(crate::clock::now_millis() > 1_577_836_800_000);
    }

    // A JSON request is a POST with the body and a JSON content type.
    #[test]
    fn json_request_shape() {
        let r = json_request("{}");
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "");
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.body, b"{}");
    }

    // A missing fixture names the path.
    #[test]
    fn missing_fixture_names_path() {
        let err = fixture_request("/nonexistent/fixture.json").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/fixture.json"), "{err}");
    }
}
