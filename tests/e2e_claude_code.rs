//! End to end with the REAL Claude Code client (npm `@anthropic-ai/claude-code`
//! 2.1.330): no captured payloads, the vendor's own binary calls Arbiter's
//! HTTP `PreToolUse` hook, configured exactly as README.md shows.
//!
//! The test
//! 1. installs the client from the npm registry into
//!    `$HOME/.cache/arbiter-e2e/claude-code-2.1.330` (reused when present). When
//!    npm is missing or the registry cannot be reached it prints `SKIPPED` to
//!    stderr and passes; any other install failure fails the test;
//! 2. starts the real `arbiter` binary with a small pack written here: a
//!    detector on `denied-marker` in a shell command and a `forbid` on it,
//!    everything else allowed;
//! 3. runs a scripted fake Anthropic Messages API on 127.0.0.1 (streaming SSE
//!    or plain JSON): the first turn asks for the `Bash` tool with a command,
//!    the turn after the tool result answers with text;
//! 4. runs `claude -p ... --output-format json` twice, in a temporary `HOME`
//!    whose `~/.claude/settings.json` points the hook at Arbiter;
//! 5. proves the outcome by side effect: `touch <tmp>/allowed-marker` creates
//!    the file, `touch <tmp>/denied-marker` does not; and by the signed
//!    receipts of each session (ALLOW, DENY by the pack's forbid policy, the
//!    command as Claude Code sent it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::npm::{self, RunError, run_bounded, tail};
use common::{Server, ServerOptions, verify_receipts};
use serde_json::{Value, json};

/// The client version under test (the one the adapter's fixtures come from).
const CLAUDE_CODE_VERSION: &str = "2.1.330";
/// One `claude -p` run: two model turns against a local fake and one hook call.
const CLAUDE_TIMEOUT: Duration = Duration::from_secs(60);
const FORBID_POLICY: &str = "e2e.forbid.denied-marker";

// ---------------------------------------------------------------------------
// Installing the client.

/// The `claude` executable of an install under `prefix`, if it runs and
/// reports the expected version.
fn installed_claude(prefix: &Path, logs: &Path) -> Option<PathBuf> {
    let candidates = [
        prefix.join("node_modules/.bin/claude"),
        // The platform package's binary, should the wrapper's postinstall
        // not have swapped its wrapper script for the native binary.
        prefix.join("node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
    ];
    for bin in candidates {
        if !bin.exists() {
            continue;
        }
        let mut cmd = Command::new(&bin);
        cmd.arg("--version").env("HOME", logs).env("DISABLE_AUTOUPDATER", "1");
        if let Ok(done) = run_bounded(cmd, Duration::from_secs(30), logs, "claude-version")
            && done.status.success()
            && done.stdout.contains(CLAUDE_CODE_VERSION)
        {
            return Some(bin);
        }
    }
    None
}

/// The path of a working `claude` 2.1.330, installing it when needed; `Err`
/// with the reason when the test must be skipped (npm or registry missing).
fn ensure_claude(logs: &Path) -> Result<PathBuf, String> {
    npm::ensure_installed(
        &format!("claude-code-{CLAUDE_CODE_VERSION}"),
        &format!("@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"),
        logs,
        |prefix| installed_claude(prefix, logs),
    )
}

// ---------------------------------------------------------------------------
// The fake Anthropic Messages API.

/// What the fake model does in the current run, and what it saw.
#[derive(Default)]
struct Script {
    /// The `Bash` command the model asks for.
    command: String,
    tool_use_id: String,
    /// How many times the model asked for the tool (bounded, see below).
    tool_uses: usize,
    /// The `tool_result` block Claude Code sent back for our `tool_use`.
    tool_result: Option<Value>,
    /// `METHOD path` of every request, for failure messages.
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Script>>;

/// Starts the fake API on 127.0.0.1; it stops when the returned handle is
/// aborted or the test's runtime shuts down.
async fn start_fake_api(script: Shared) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding the fake API");
    let addr = listener.local_addr().expect("fake API address");
    let app = axum::Router::new().fallback(fake_api).with_state(script);
    let handle = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("fake API server");
    });
    (format!("http://{addr}"), handle)
}

async fn fake_api(State(script): State<Shared>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    script.lock().unwrap().requests.push(format!("{method} {uri}"));
    if method != Method::POST || !path.starts_with("/v1/messages") {
        return (StatusCode::NOT_FOUND, axum::Json(api_error("not_found_error", "not served by the e2e fake")))
            .into_response();
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, axum::Json(api_error("invalid_request_error", "body is not JSON")))
            .into_response();
    };
    if path.starts_with("/v1/messages/count_tokens") {
        return axum::Json(json!({ "input_tokens": 10 })).into_response();
    }
    let (content, stop_reason) = next_turn(&script, &req);
    let model = req["model"].as_str().unwrap_or("claude-e2e").to_owned();
    if req["stream"].as_bool() == Some(true) {
        ([(header::CONTENT_TYPE, "text/event-stream")], sse(&model, &content, stop_reason)).into_response()
    } else {
        axum::Json(message(&model, content, Some(stop_reason))).into_response()
    }
}

/// The scripted model: the main loop (which offers the `Bash` tool) gets a
/// `tool_use` until the tool result is back, then a final text. Any other
/// request (a side query without tools) gets a short text.
fn next_turn(script: &Shared, req: &Value) -> (Vec<Value>, &'static str) {
    let mut s = script.lock().unwrap();
    let offers_bash =
        req["tools"].as_array().is_some_and(|tools| tools.iter().any(|t| t["name"].as_str() == Some("Bash")));
    if !offers_bash {
        return (vec![json!({ "type": "text", "text": "ok" })], "end_turn");
    }
    let result = req["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .find(|block| block["type"] == "tool_result" && block["tool_use_id"].as_str() == Some(&s.tool_use_id))
        .cloned();
    if let Some(result) = result {
        s.tool_result = Some(result);
        return (vec![json!({ "type": "text", "text": "E2E-DONE" })], "end_turn");
    }
    // Bounded: a client that keeps retrying gets a text answer, not a loop.
    if s.tool_uses >= 3 {
        return (vec![json!({ "type": "text", "text": "E2E-GAVE-UP" })], "end_turn");
    }
    s.tool_uses += 1;
    let tool_use = json!({
        "type": "tool_use",
        "id": s.tool_use_id,
        "name": "Bash",
        "input": { "command": s.command, "description": "Touch the e2e marker file" },
    });
    (vec![tool_use], "tool_use")
}

fn api_error(kind: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": kind, "message": message } })
}

fn message(model: &str, content: Vec<Value>, stop_reason: Option<&str>) -> Value {
    json!({
        "id": "msg_e2e",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": { "input_tokens": 10, "output_tokens": 10 },
    })
}

/// The Messages API streaming format: `message_start`, per content block
/// `content_block_start` / `content_block_delta` / `content_block_stop`,
/// then `message_delta` (stop reason) and `message_stop`.
fn sse(model: &str, content: &[Value], stop_reason: &str) -> String {
    let mut events = vec![json!({ "type": "message_start", "message": message(model, Vec::new(), None) })];
    for (index, block) in content.iter().enumerate() {
        let (start, delta) = if block["type"] == "tool_use" {
            (
                json!({ "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} }),
                json!({ "type": "input_json_delta", "partial_json": block["input"].to_string() }),
            )
        } else {
            (json!({ "type": "text", "text": "" }), json!({ "type": "text_delta", "text": block["text"] }))
        };
        events.push(json!({ "type": "content_block_start", "index": index, "content_block": start }));
        events.push(json!({ "type": "content_block_delta", "index": index, "delta": delta }));
        events.push(json!({ "type": "content_block_stop", "index": index }));
    }
    events.push(json!({
        "type": "message_delta",
        "delta": { "stop_reason": stop_reason, "stop_sequence": null },
        "usage": { "output_tokens": 10 },
    }));
    events.push(json!({ "type": "message_stop" }));
    events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or_default())).collect()
}

// ---------------------------------------------------------------------------
// The pack and the client's configuration.

fn write_pack(dir: &Path) {
    common::write_forbid_pack(
        dir,
        "e2e-claude-code",
        "shell.exec",
        "command",
        "denied-marker",
        FORBID_POLICY,
        "The e2e test forbids any shell command that names denied-marker.",
    );
}

/// `~/.claude/settings.json` with the `PreToolUse` hook exactly as README.md
/// documents it.
fn write_claude_settings(home: &Path, hook_url: &str) {
    let dir = home.join(".claude");
    std::fs::create_dir_all(&dir).expect("creating ~/.claude");
    let settings = json!({
        "hooks": {
            "PreToolUse": [{
                "matcher": "*",
                "hooks": [{
                    "type": "http",
                    "url": hook_url,
                    "headers": { "Authorization": "Bearer $ARBITER_TOKEN" },
                    "allowedEnvVars": ["ARBITER_TOKEN"],
                    "timeout": 15,
                    "onFailure": "block",
                }],
            }],
        },
    });
    std::fs::write(dir.join("settings.json"), serde_json::to_vec_pretty(&settings).unwrap()).expect("writing settings");
}

struct Env<'a> {
    claude: &'a Path,
    home: &'a Path,
    workdir: &'a Path,
    logs: &'a Path,
    api_base: &'a str,
    ingress_token: &'a str,
}

/// One `claude -p` run in `session`; returns its `--output-format json` result.
async fn run_claude(env: &Env<'_>, session: &str, name: &str) -> Value {
    let mut cmd = Command::new(env.claude);
    cmd.arg("-p")
        .arg("Touch the e2e marker file with the Bash tool.")
        .args(["--output-format", "json", "--permission-mode", "bypassPermissions", "--tools", "Bash"])
        .args(["--session-id", session])
        .current_dir(env.workdir)
        // Nothing from the caller's environment (it may itself run inside
        // Claude Code, with ANTHROPIC_* or CLAUDE_* variables set).
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.home)
        .env("SHELL", "/bin/bash")
        .env("TMPDIR", env.workdir)
        .env("ANTHROPIC_BASE_URL", env.api_base)
        .env("ANTHROPIC_API_KEY", "sk-ant-e2e-dummy")
        .env("ARBITER_TOKEN", env.ingress_token)
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        // Claude Code refuses bypassPermissions as root outside a sandbox
        // (CI runs as root); this is one.
        .env("IS_SANDBOX", "1");
    let logs = env.logs.to_owned();
    let name = name.to_owned();
    let run = tokio::task::spawn_blocking(move || run_bounded(cmd, CLAUDE_TIMEOUT, &logs, &name));
    let done = match run.await.expect("claude runner thread") {
        Ok(done) => done,
        Err(RunError::Spawn(e)) => panic!("starting {}: {e}", env.claude.display()),
        Err(RunError::TimedOut { stdout, stderr }) => panic!(
            "claude -p ran longer than {CLAUDE_TIMEOUT:?} and was killed\nstdout:\n{}\nstderr:\n{}",
            tail(&stdout),
            tail(&stderr)
        ),
    };
    assert!(
        done.status.success(),
        "claude -p exited with {}\nstdout:\n{}\nstderr:\n{}",
        done.status,
        tail(&done.stdout),
        tail(&done.stderr)
    );
    let out: Value = serde_json::from_str(done.stdout.trim()).unwrap_or_else(|e| {
        panic!("claude -p --output-format json printed no JSON ({e}):\n{}\nstderr:\n{}", done.stdout, done.stderr)
    });
    assert_eq!(out["is_error"], false, "claude reported an error: {out}\nstderr:\n{}", tail(&done.stderr));
    assert_eq!(out["session_id"], session, "claude used another session: {out}");
    out
}

/// The single `PreToolUse` receipt of `session`.
async fn pre_tool_use_receipt(server: &Server, session: &str) -> Value {
    let receipts = server.receipts_paged(&format!("session_id={session}"), 100).await;
    let pre: Vec<&Value> = receipts.iter().filter(|r| r["action"]["event_kind"] == "PreToolUse").collect();
    assert_eq!(
        pre.len(),
        1,
        "expected exactly one PreToolUse receipt for session {session}, got {}: {receipts:#?}\nserver stderr:\n{}",
        pre.len(),
        server.stderr_tail()
    );
    pre[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_claude_code_is_allowed_and_denied_by_arbiter() {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("arbiter-e2e-").tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("creating logs dir");

    let claude = match tokio::task::spawn_blocking({
        let logs = logs.clone();
        move || ensure_claude(&logs)
    })
    .await
    .expect("install thread")
    {
        Ok(bin) => bin,
        Err(why) => {
            npm::skipped("e2e_claude_code", &why);
            return;
        }
    };
    eprintln!("e2e: client ready after {:.1}s", started.elapsed().as_secs_f64());

    // Arbiter with the test's pack.
    let pack = tmp.path().join("pack");
    write_pack(&pack);
    let config = format!("policies = {:?}\n", pack.display().to_string());
    let server = tokio::task::spawn_blocking(move || {
        Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() })
    })
    .await
    .expect("starting arbiter");
    eprintln!("e2e: arbiter listening at {} after {:.1}s", server.base, started.elapsed().as_secs_f64());

    // The fake model API, and the client's home and working directory.
    let script: Shared = Arc::default();
    let (api_base, api) = start_fake_api(script.clone()).await;
    let home = tmp.path().join("home");
    let workdir = tmp.path().join("work");
    std::fs::create_dir_all(&workdir).expect("creating work dir");
    write_claude_settings(&home, &server.url("/v1/hooks/claude-code"));
    let env = Env {
        claude: &claude,
        home: &home,
        workdir: &workdir,
        logs: &logs,
        api_base: &api_base,
        ingress_token: &server.ingress_token,
    };
    let markers = tmp.path().join("markers");
    std::fs::create_dir_all(&markers).expect("creating markers dir");

    // Run A: an ordinary command, allowed.
    let allowed = markers.join("allowed-marker");
    let cmd_a = format!("touch {}", allowed.display());
    let session_a = "e2e00000-0000-4000-8000-00000000000a";
    *script.lock().unwrap() =
        Script { command: cmd_a.clone(), tool_use_id: "toolu_e2e_allowed".into(), ..Script::default() };
    let out_a = run_claude(&env, session_a, "claude-a").await;
    let (result_a, requests_a) = {
        let s = script.lock().unwrap();
        (s.tool_result.clone(), s.requests.clone())
    };
    eprintln!("e2e: run A done after {:.1}s; API requests: {requests_a:?}", started.elapsed().as_secs_f64());
    let result_a = result_a.unwrap_or_else(|| {
        panic!(
            "run A: Claude Code never sent the Bash tool result to the model; requests: {requests_a:?}; output: {out_a}"
        )
    });
    assert_eq!(out_a["result"], "E2E-DONE", "run A: unexpected final answer: {out_a}");
    assert_ne!(result_a["is_error"], true, "run A: the allowed Bash call failed: {result_a}");
    assert!(
        allowed.exists(),
        "run A: allowed command ran but {} does not exist; tool result: {result_a}",
        allowed.display()
    );

    // Run B: the forbidden command, denied before it runs.
    let denied = markers.join("denied-marker");
    let cmd_b = format!("touch {}", denied.display());
    let session_b = "e2e00000-0000-4000-8000-00000000000b";
    *script.lock().unwrap() =
        Script { command: cmd_b.clone(), tool_use_id: "toolu_e2e_denied".into(), ..Script::default() };
    let out_b = run_claude(&env, session_b, "claude-b").await;
    let (result_b, requests_b) = {
        let s = script.lock().unwrap();
        (s.tool_result.clone(), s.requests.clone())
    };
    eprintln!("e2e: run B done after {:.1}s; API requests: {requests_b:?}", started.elapsed().as_secs_f64());
    let result_b = result_b.unwrap_or_else(|| {
        panic!(
            "run B: Claude Code never sent the Bash tool result to the model; requests: {requests_b:?}; output: {out_b}"
        )
    });
    assert!(!denied.exists(), "run B: the forbidden command ran: {} exists; tool result: {result_b}", denied.display());
    assert_eq!(result_b["is_error"], true, "run B: the model was not told the call failed: {result_b}");

    // The receipts behind both decisions.
    let receipt_a = pre_tool_use_receipt(&server, session_a).await;
    assert_eq!(receipt_a["decision"]["result"], "ALLOW", "run A: receipt {receipt_a:#}");
    assert_eq!(receipt_a["action"]["parameters"]["command"], cmd_a.as_str(), "run A: receipt command");
    assert_eq!(receipt_a["action"]["original_tool"], "Bash", "run A: receipt tool");
    assert_eq!(receipt_a["action"]["action_id"], "toolu_e2e_allowed", "run A: receipt action id");
    assert_eq!(
        receipt_a["vendor"]["reply"]["body"]["hookSpecificOutput"]["permissionDecision"], "allow",
        "run A: what Claude Code was told: {receipt_a:#}"
    );

    let receipt_b = pre_tool_use_receipt(&server, session_b).await;
    assert_eq!(receipt_b["decision"]["result"], "DENY", "run B: receipt {receipt_b:#}");
    assert_eq!(receipt_b["decision"]["policy"]["policy_ids"], json!([FORBID_POLICY]), "run B: deciding policy");
    assert_eq!(receipt_b["decision"]["policy"]["pack"], "e2e-claude-code", "run B: pack");
    assert_eq!(receipt_b["action"]["parameters"]["command"], cmd_b.as_str(), "run B: receipt command");
    assert_eq!(receipt_b["action"]["action_id"], "toolu_e2e_denied", "run B: receipt action id");
    assert_eq!(
        receipt_b["vendor"]["reply"]["body"]["hookSpecificOutput"]["permissionDecision"], "deny",
        "run B: what Claude Code was told: {receipt_b:#}"
    );
    // Claude Code relayed Arbiter's reason, with the receipt id, to the model.
    let relayed = result_b["content"].to_string();
    let receipt_id_b = receipt_b["receipt_id"].as_str().expect("receipt_id");
    assert!(
        relayed.contains("denied by policy") && relayed.contains(receipt_id_b),
        "run B: the tool result the model saw does not carry Arbiter's reason and receipt {receipt_id_b}: {relayed}"
    );

    // And every receipt verifies independently (signature, hash chain).
    verify_receipts(&server.all_receipts().await, &server.keys().await).expect("receipts verify");

    api.abort();
    eprintln!("e2e: passed in {:.1}s", started.elapsed().as_secs_f64());
}
