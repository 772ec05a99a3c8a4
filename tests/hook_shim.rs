//! `arbiter hook`, the command-hook shim, as a vendor runs it: a process
//! with the hook JSON on stdin, judged by its stdout, stderr and exit code.
//! Against the real server it passes decisions through; against a server
//! that is down, hangs or answers garbage it fails closed (exit 2 and the
//! vendor's deny form), well inside its own timeout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ARBITER, Server, pre_tool_use_bash};
use serde_json::{Value, json};

struct Run {
    code: Option<i32>,
    stdout: Value,
    stderr: String,
    took: Duration,
}

fn shim(url: &str, token: Option<&str>, integration: &str, extra: &[&str], input: &[u8]) -> Run {
    let mut cmd = Command::new(ARBITER);
    cmd.args(["hook", "--integration", integration, "--url", url]).args(extra);
    cmd.env_remove("ARBITER_TOKEN").env_remove("ARBITER_TOKEN_FILE");
    if let Some(t) = token {
        cmd.env("ARBITER_TOKEN", t);
    }
    let t0 = Instant::now();
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A vendor may close early; a failed write is the shim's to handle.
    let _ = stdin.write_all(input);
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    Run {
        code: out.status.code(),
        stdout: serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("stdout is not JSON: {stdout:?}")),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: t0.elapsed(),
    }
}

fn bash(cmd: &str) -> Vec<u8> {
    serde_json::to_vec(&pre_tool_use_bash(cmd, "shim-session")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Through the real server: an allowed action exits 0 with the vendor's
// allow; a denied one exits 2 with the reason on stderr; the prompt (no
// decision) passes.
async fn the_shim_relays_arbiters_decisions() {
    let server = Server::start();
    let url = server.base.clone();
    let token = server.ingress_token.clone();
    let (url2, token2) = (url.clone(), token.clone());
    let allowed =
        tokio::task::spawn_blocking(move || shim(&url2, Some(&token2), "claude-code", &[], &bash("ls"))).await.unwrap();
    assert_eq!(allowed.code, Some(0), "{}", allowed.stderr);
    assert_eq!(allowed.stdout["hookSpecificOutput"]["permissionDecision"], "allow");

    let (url2, token2) = (url.clone(), token.clone());
    let denied = tokio::task::spawn_blocking(move || shim(&url2, Some(&token2), "claude-code", &[], &bash("rm -rf /")))
        .await
        .unwrap();
    assert_eq!(denied.code, Some(2));
    assert_eq!(denied.stdout["hookSpecificOutput"]["permissionDecision"], "deny");
    assert!(denied.stderr.contains("receipt"), "the reason names the receipt: {}", denied.stderr);

    let prompt = serde_json::to_vec(&json!({"session_id": "shim-session", "transcript_path": "/t", "cwd": "/w",
                                             "hook_event_name": "UserPromptSubmit", "prompt": "list files"}))
    .unwrap();
    let noted =
        tokio::task::spawn_blocking(move || shim(&url, Some(&token), "claude-code", &[], &prompt)).await.unwrap();
    assert_eq!(noted.code, Some(0), "{}", noted.stderr);
}

#[test]
// Arbiter down, no token, oversized input: deny form, exit 2, a reason.
fn the_shim_fails_closed_when_it_cannot_ask() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}");
    let down = shim(&url, Some("some-token-0123456789"), "claude-code", &[], &bash("ls"));
    assert_eq!(down.code, Some(2), "{}", down.stderr);
    assert_eq!(down.stdout["hookSpecificOutput"]["permissionDecision"], "deny");
    assert!(down.stderr.contains("unreachable"), "{}", down.stderr);

    let gemini = shim(&url, Some("some-token-0123456789"), "gemini-cli", &[], b"{\"hook_event_name\":\"BeforeTool\"}");
    assert_eq!((gemini.code, gemini.stdout["decision"].as_str()), (Some(2), Some("deny")));

    let no_token = shim(&url, None, "claude-code", &[], &bash("ls"));
    assert_eq!(no_token.code, Some(2));
    assert!(no_token.stderr.contains("token"), "{}", no_token.stderr);

    let huge = vec![b' '; 2 * 1024 * 1024];
    let oversized = shim(&url, Some("some-token-0123456789"), "claude-code", &[], &huge);
    assert_eq!(oversized.code, Some(2));
    assert!(oversized.stderr.contains("exceeds"), "{}", oversized.stderr);
}

#[test]
// Arbiter slow past the shim's own timeout, or answering garbage / an error:
// blocked, in about the timeout, never a pass.
fn the_shim_fails_closed_on_slow_or_garbage_answers() {
    let (slow, _hold) = fake_server(None);
    let run = shim(&slow, Some("some-token-0123456789"), "codex-cli", &["--timeout-ms", "300"], &bash("ls"));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("did not answer"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);

    let (garbage, _g) = fake_server(Some("HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!"));
    let run = shim(&garbage, Some("some-token-0123456789"), "claude-code", &[], &bash("ls"));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("not a JSON object"), "{}", run.stderr);

    let (error, _e) =
        fake_server(Some("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"));
    let run = shim(&error, Some("some-token-0123456789"), "claude-code", &[], &bash("ls"));
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("503"), "{}", run.stderr);
}

fn cursor_event(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cursor/documented").join(name);
    std::fs::read(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Cursor through the real server: its own allow and deny forms, exit 2 on a
// deny, and `continue: true` for a prompt.
async fn the_shim_relays_cursor_replies() {
    let server = Server::start();
    let (url, token) = (server.base.clone(), server.ingress_token.clone());
    let run = move |body: Vec<u8>| shim(&url, Some(&token), "cursor", &[], &body);
    let shell = |cmd: &str| {
        let mut v: Value = serde_json::from_slice(&cursor_event("beforeShellExecution.json")).unwrap();
        v["command"] = json!(cmd);
        serde_json::to_vec(&v).unwrap()
    };
    let (allow, deny, prompt) = (shell("ls"), shell("rm -rf /"), cursor_event("beforeSubmitPrompt.json"));
    let (allowed, denied, noted) =
        tokio::task::spawn_blocking(move || (run(allow), run(deny), run(prompt))).await.unwrap();
    assert_eq!((allowed.code, allowed.stdout.clone()), (Some(0), json!({"permission": "allow"})), "{}", allowed.stderr);
    assert_eq!(denied.code, Some(2));
    assert_eq!(denied.stdout["permission"], "deny");
    assert_eq!(denied.stdout["agent_message"].as_str(), Some(denied.stderr.trim()));
    assert!(denied.stderr.contains("receipt"), "{}", denied.stderr);
    assert_eq!((noted.code, noted.stdout.clone()), (Some(0), json!({"continue": true})), "{}", noted.stderr);
}

#[test]
// Arbiter down, slow or answering garbage: Cursor gets its deny form for the
// event at hand (a prompt is held back with `continue: false`), exit 2.
fn the_shim_fails_closed_in_cursors_form() {
    let token = Some("some-token-0123456789");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = format!("http://{closed}");
    let (slow, _hold) = fake_server(None);
    let (garbage, _g) = fake_server(Some("HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!"));
    let deny_form = |run: &Run| {
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        let reason = run.stderr.trim();
        assert!(reason.starts_with("arbiter hook: "), "{reason}");
        assert_eq!(run.stdout, json!({"permission": "deny", "user_message": reason, "agent_message": reason}));
    };
    for event in ["beforeShellExecution.json", "beforeMCPExecution.json", "beforeReadFile.json", "preToolUse.json"] {
        let run = shim(&down, token, "cursor", &[], &cursor_event(event));
        deny_form(&run);
        assert!(run.stderr.contains("unreachable"), "{event}: {}", run.stderr);
    }
    let run = shim(&slow, token, "cursor", &["--timeout-ms", "300"], &cursor_event("beforeShellExecution.json"));
    deny_form(&run);
    assert!(
        run.stderr.contains("did not answer") && run.took < Duration::from_secs(5),
        "{:?} {}",
        run.took,
        run.stderr
    );
    let run = shim(&garbage, token, "cursor", &[], &cursor_event("beforeMCPExecution.json"));
    deny_form(&run);
    assert!(run.stderr.contains("not a JSON object"), "{}", run.stderr);

    let prompt = shim(&down, token, "cursor", &[], &cursor_event("beforeSubmitPrompt.json"));
    assert_eq!(prompt.code, Some(2));
    assert_eq!(prompt.stdout, json!({"continue": false, "user_message": prompt.stderr.trim()}));
    // Not even JSON: both forms at once, so whatever the event it blocks.
    let unreadable = shim(&down, token, "cursor", &[], b"{not json");
    assert_eq!(unreadable.code, Some(2));
    assert_eq!(
        (unreadable.stdout["permission"].as_str(), unreadable.stdout["continue"].as_bool()),
        (Some("deny"), Some(false))
    );
}

/// A loopback server that answers every connection with `reply` after
/// reading the request, or (None) reads and never answers. Runs until the
/// test process ends.
fn fake_server(reply: Option<&'static str>) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = std::io::Read::read(&mut stream, &mut buf);
            match reply {
                Some(r) => {
                    let _ = stream.write_all(r.as_bytes());
                }
                None => open.push(stream),
            }
        }
    });
    (url, handle)
}
