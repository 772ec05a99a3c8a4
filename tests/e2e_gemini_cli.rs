//! End to end with the REAL Gemini CLI (npm `@google/gemini-cli` 0.61.0, the
//! version of the adapter's fixtures): the vendor's own binary runs the
//! `arbiter hook` shim (the binary under test) as its command hook, with the
//! `.gemini/settings.json` block of docs/adapters.md, read from that page.
//!
//! The test
//! 1. installs the client into `$HOME/.cache/arbiter-e2e/gemini-cli-0.61.0`
//!    (reused when present; `SKIPPED` only when npm or the registry cannot be
//!    reached, see `common::npm`);
//! 2. starts the real `arbiter` with a pack that forbids any shell command
//!    naming `denied.txt` and allows everything else;
//! 3. runs `gemini -p` headless with its hidden `--fake-responses` replay:
//!    the router's classifier call, a `run_shell_command` function call, then
//!    a text answer (no network, no model, no key);
//! 4. proves by side effect that `touch allowed.txt` ran and
//!    `touch denied.txt` did not, and by the signed receipts and the session
//!    log that Arbiter decided both (ALLOW, and DENY by the pack's policy)
//!    and saw every documented hook (start, prompt, tool, tool output, end);
//! 5. proves the shim fails closed with the real client: with Gemini's
//!    environment redaction stripping the token, and with Arbiter down (the
//!    prompt hook blocks the turn; with only `BeforeTool` configured, the
//!    tool call is blocked), nothing runs.
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
use std::time::{Duration, Instant};

use common::npm::{self, RunError, run_bounded, tail};
use common::{ARBITER, Server, ServerOptions, verify_receipts};
use serde_json::{Value, json};

const GEMINI_CLI_VERSION: &str = "0.61.0";
/// One headless run: three replayed model calls and up to five hook calls,
/// each a start of the shim (~2.5 s on an idle machine).
const GEMINI_TIMEOUT: Duration = Duration::from_secs(120);
const PACK: &str = "e2e-gemini-cli";
const FORBID_POLICY: &str = "e2e.forbid.denied-txt";
const PROMPT: &str = "Create the marker file with run_shell_command.";
/// What the scripted model answers once the tool result is back.
const FINAL_TEXT: &str = "E2E-DONE";

// ---------------------------------------------------------------------------
// Installing the client.

/// The `gemini` executable of an install under `prefix`, if it runs and
/// reports the expected version.
fn installed_gemini(prefix: &Path, logs: &Path) -> Option<PathBuf> {
    let bin = prefix.join("node_modules/.bin/gemini");
    if !bin.exists() {
        return None;
    }
    let mut cmd = Command::new(&bin);
    cmd.arg("--version").env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("HOME", logs);
    match run_bounded(cmd, Duration::from_secs(60), logs, "gemini-version") {
        Ok(done) if done.status.success() && done.stdout.trim() == GEMINI_CLI_VERSION => Some(bin),
        _ => None,
    }
}

fn ensure_gemini(logs: &Path) -> Result<PathBuf, String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Err("node is not installed".to_owned());
    }
    npm::ensure_installed(
        &format!("gemini-cli-{GEMINI_CLI_VERSION}"),
        &format!("@google/gemini-cli@{GEMINI_CLI_VERSION}"),
        logs,
        |prefix| installed_gemini(prefix, logs),
    )
}

// ---------------------------------------------------------------------------
// The client's configuration and scripted model.

/// The `.gemini/settings.json` block of docs/adapters.md (the JSON block
/// after the `e2e_gemini_cli: settings` marker), with `command` in place of
/// the shim command the page shows.
fn documented_settings(command: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/adapters.md");
    let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (_, after) = page
        .split_once("<!-- e2e_gemini_cli: settings -->")
        .expect("docs/adapters.md has lost its `<!-- e2e_gemini_cli: settings -->` marker");
    let block = after
        .trim_start()
        .strip_prefix("```json")
        .and_then(|rest| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("no ```json block right after the e2e_gemini_cli marker in docs/adapters.md");
    let documented = "\"arbiter hook --integration gemini-cli\"";
    assert!(block.contains(documented), "the documented Gemini settings no longer run {documented}:\n{block}");
    let block = block.replace(documented, &Value::from(command).to_string());
    serde_json::from_str(&block)
        .unwrap_or_else(|e| panic!("the documented Gemini settings are not JSON ({e}):\n{block}"))
}

/// Writes `<dir>/.gemini/settings.json`: a workspace's, or the user's when `dir`
/// is the home directory.
fn write_gemini_settings(dir: &Path, settings: &Value) {
    let dir = dir.join(".gemini");
    std::fs::create_dir_all(&dir).expect("creating .gemini");
    std::fs::write(dir.join("settings.json"), serde_json::to_vec_pretty(settings).unwrap()).expect("writing settings");
}

/// User settings: nothing that would reach the network.
fn write_user_settings(home: &Path) {
    let settings = json!({
        "general": { "enableAutoUpdate": false, "enableAutoUpdateNotification": false },
        "privacy": { "usageStatisticsEnabled": false },
    });
    write_gemini_settings(home, &settings);
}

fn candidate(part: Value) -> Value {
    json!({
        "candidates": [{ "content": { "role": "model", "parts": [part] }, "finishReason": "STOP", "index": 0 }],
        "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15 },
    })
}

/// The `--fake-responses` script (one JSON object a line, consumed in
/// order): the model router's classifier, then a turn that calls
/// `run_shell_command` with `command`, then the final text.
fn write_fake_responses(path: &Path, command: &str) {
    let classifier = json!({ "complexity_reasoning": "a single shell command", "complexity_score": 5 });
    let lines = [
        json!({ "method": "generateContent", "response": candidate(json!({ "text": classifier.to_string() })) }),
        json!({
            "method": "generateContentStream",
            "response": [candidate(json!({ "functionCall": {
                "name": "run_shell_command",
                "args": { "command": command, "description": "Create the e2e marker file" },
            }}))],
        }),
        json!({ "method": "generateContentStream", "response": [candidate(json!({ "text": FINAL_TEXT }))] }),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).expect("writing fake responses");
}

// ---------------------------------------------------------------------------
// Running the client.

/// How the shim gets its ingress token.
enum Token<'a> {
    Env(&'a str),
    File(&'a Path),
}

struct Env<'a> {
    gemini: &'a Path,
    home: &'a Path,
    logs: &'a Path,
}

/// One headless run and its `--output-format stream-json` events.
struct GeminiRun {
    name: String,
    events: Vec<Value>,
    stdout: String,
    stderr: String,
}

impl GeminiRun {
    /// What Gemini printed, for failure messages.
    fn dump(&self) -> String {
        format!("--- {} stdout:\n{}\n--- {} stderr:\n{}", self.name, tail(&self.stdout), self.name, tail(&self.stderr))
    }

    fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    /// The single tool call's `tool_use` and `tool_result` events.
    fn tool_call(&self) -> (&Value, &Value) {
        let uses = self.of_type("tool_use");
        let results = self.of_type("tool_result");
        assert!(
            uses.len() == 1 && results.len() == 1,
            "{}: expected one tool_use and one tool_result, got {} and {}\n{}",
            self.name,
            uses.len(),
            results.len(),
            self.dump()
        );
        assert_eq!(uses[0]["tool_id"], results[0]["tool_id"], "{}: result of another call\n{}", self.name, self.dump());
        (uses[0], results[0])
    }

    /// Whether Gemini reported an error event starting with `prefix` (how
    /// a blocked turn shows).
    fn warned(&self, prefix: &str) -> bool {
        self.of_type("error").iter().any(|e| e["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
    }

    /// The assistant's text, deltas joined.
    fn answer(&self) -> String {
        self.of_type("message")
            .iter()
            .filter(|m| m["role"] == "assistant")
            .filter_map(|m| m["content"].as_str())
            .collect()
    }
}

/// Runs `gemini -p` in `workdir` as session `session`, the model scripted to
/// run `command`. `extra` adds environment variables.
async fn run_gemini(
    env: &Env<'_>,
    workdir: &Path,
    session: &str,
    command: &str,
    token: Token<'_>,
    extra: &[(&str, &str)],
    name: &str,
) -> GeminiRun {
    let responses = env.logs.join(format!("{name}.responses.jsonl"));
    write_fake_responses(&responses, command);
    let mut cmd = Command::new(env.gemini);
    cmd.arg("-p")
        .arg(PROMPT)
        .args(["--session-id", session, "--approval-mode", "yolo", "--output-format", "stream-json"])
        .arg("--fake-responses")
        .arg(&responses)
        .current_dir(workdir)
        // Nothing from the caller's environment (GITHUB_SHA, GEMINI_*, a
        // real key): the runs must not depend on where the test runs.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.home)
        .env("TMPDIR", env.logs)
        .env("NO_COLOR", "1")
        .env("GEMINI_API_KEY", "dummy")
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true");
    match token {
        Token::Env(t) => cmd.env("ARBITER_TOKEN", t),
        Token::File(p) => cmd.env("ARBITER_TOKEN_FILE", p),
    };
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let logs = env.logs.to_owned();
    let log_name = name.to_owned();
    let run = tokio::task::spawn_blocking(move || run_bounded(cmd, GEMINI_TIMEOUT, &logs, &log_name));
    let done = match run.await.expect("gemini runner thread") {
        Ok(done) => done,
        Err(RunError::Spawn(e)) => panic!("{name}: starting {}: {e}", env.gemini.display()),
        Err(RunError::TimedOut { stdout, stderr }) => panic!(
            "{name}: gemini -p ran longer than {GEMINI_TIMEOUT:?} and was killed\n--- stdout:\n{}\n--- stderr:\n{}",
            tail(&stdout),
            tail(&stderr)
        ),
    };
    let events =
        done.stdout.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let run = GeminiRun { name: name.to_owned(), events, stdout: done.stdout, stderr: done.stderr };
    assert!(done.status.success(), "{name}: gemini -p exited with {}\n{}", done.status, run.dump());
    let init = run.of_type("init");
    assert!(
        init.len() == 1 && init[0]["session_id"] == session,
        "{name}: gemini did not start session {session}\n{}",
        run.dump()
    );
    let result = run.of_type("result");
    assert!(result.len() == 1 && result[0]["status"] == "success", "{name}: no successful result\n{}", run.dump());
    run
}

// ---------------------------------------------------------------------------
// What Arbiter recorded.

/// The single `BeforeTool` receipt of `session`.
async fn before_tool_receipt(server: &Server, session: &str, run: &GeminiRun) -> Value {
    let receipts = server.receipts_paged(&format!("session_id={session}"), 100).await;
    let found: Vec<&Value> = receipts.iter().filter(|r| r["action"]["event_kind"] == "BeforeTool").collect();
    assert_eq!(
        found.len(),
        1,
        "expected one BeforeTool receipt for session {session}: {receipts:#?}\n{}\n--- server stderr:\n{}",
        run.dump(),
        server.stderr_tail()
    );
    found[0].clone()
}

/// The session's context log: its entries' kinds, after checking that the
/// log verifies.
async fn session_log(server: &Server, session: &str) -> (Vec<String>, Value) {
    let log = server.admin_json(&format!("/v1/sessions/{session}")).await;
    let verify = server.admin_json(&format!("/v1/sessions/{session}/verify")).await;
    let entries = log["entries"].as_array().expect("session entries");
    assert_eq!(verify["intact"], true, "session {session} does not verify: {verify}");
    assert_eq!(verify["first_broken"], Value::Null, "session {session}: {verify}");
    assert_eq!(verify["entries"], entries.len(), "session {session}: verify counted other entries: {verify}");
    let kinds = entries.iter().map(|e| e["kind"].as_str().unwrap_or_default().to_owned()).collect();
    (kinds, log)
}

/// The log entry of `kind` (the first).
fn entry<'a>(log: &'a Value, kind: &str) -> &'a Value {
    log["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} entry: {log:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gemini_cli_is_allowed_and_denied_by_arbiter() {
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("arbiter-e2e-gemini-").tempdir().expect("temp dir");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("creating logs dir");

    let gemini = match tokio::task::spawn_blocking({
        let logs = logs.clone();
        move || ensure_gemini(&logs)
    })
    .await
    .expect("install thread")
    {
        Ok(bin) => bin,
        Err(why) => {
            npm::skipped("e2e_gemini_cli", &why);
            return;
        }
    };
    eprintln!("e2e: client ready after {:.1}s", started.elapsed().as_secs_f64());

    let pack = tmp.path().join("pack");
    common::write_forbid_pack(
        &pack,
        PACK,
        "shell.exec",
        "command",
        r"denied\.txt",
        FORBID_POLICY,
        "The e2e test forbids any shell command that names denied.txt.",
    );
    let config = format!("policies = {:?}\n", pack.display().to_string());
    let mut server = tokio::task::spawn_blocking(move || {
        Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() })
    })
    .await
    .expect("starting arbiter");
    eprintln!("e2e: arbiter listening at {} after {:.1}s", server.base, started.elapsed().as_secs_f64());

    let home = tmp.path().join("home");
    write_user_settings(&home);
    let env = Env { gemini: &gemini, home: &home, logs: &logs };
    // The shim under test, quoted for the shell Gemini runs hooks with.
    let shim = format!("'{ARBITER}' hook --integration gemini-cli --url {}", server.base);
    let settings = documented_settings(&shim);
    let workdir = tmp.path().join("work");
    write_gemini_settings(&workdir, &settings);
    let token_file = tmp.path().join("ingress.token");
    std::fs::write(&token_file, &server.ingress_token).expect("writing token file");

    // Run A: an ordinary command, allowed (token from ARBITER_TOKEN).
    let session_a = "e2e6e000-0000-4000-8000-00000000000a";
    let cmd_a = "touch allowed.txt";
    let run_a = run_gemini(&env, &workdir, session_a, cmd_a, Token::Env(&server.ingress_token), &[], "gemini-a").await;
    eprintln!("e2e: run A done after {:.1}s", started.elapsed().as_secs_f64());
    let (call_a, result_a) = run_a.tool_call();
    assert_eq!(call_a["tool_name"], "run_shell_command", "run A\n{}", run_a.dump());
    assert_eq!(call_a["parameters"]["command"], cmd_a, "run A\n{}", run_a.dump());
    assert_eq!(result_a["status"], "success", "run A: the allowed call failed\n{}", run_a.dump());
    assert!(workdir.join("allowed.txt").exists(), "run A: allowed.txt was not created\n{}", run_a.dump());
    assert_eq!(run_a.answer(), FINAL_TEXT, "run A\n{}", run_a.dump());

    let receipt_a = before_tool_receipt(&server, session_a, &run_a).await;
    let receipt_id_a = receipt_a["receipt_id"].as_str().expect("receipt_id");
    assert_eq!(receipt_a["decision"]["result"], "ALLOW", "run A: {receipt_a:#}");
    assert_eq!(receipt_a["action"]["integration"], "gemini-cli", "run A: {receipt_a:#}");
    assert_eq!(receipt_a["action"]["original_tool"], "run_shell_command", "run A: {receipt_a:#}");
    assert_eq!(receipt_a["action"]["parameters"]["command"], cmd_a, "run A: {receipt_a:#}");
    let reply_a = &receipt_a["vendor"]["reply"]["body"];
    assert_eq!(reply_a["decision"], "allow", "run A: what Gemini was told: {receipt_a:#}");
    // Every documented hook reached Arbiter, in order, on one session.
    let (kinds, log_a) = session_log(&server, session_a).await;
    assert_eq!(
        kinds,
        ["session_start", "intent", "action", "observation", "session_end"],
        "run A: session log {log_a:#}\n{}",
        run_a.dump()
    );
    assert_eq!(entry(&log_a, "intent")["data"]["text"], PROMPT, "run A: the prompt: {log_a:#}");
    assert_eq!(entry(&log_a, "action")["data"]["receipt_id"], receipt_id_a, "run A: {log_a:#}");
    assert_eq!(entry(&log_a, "observation")["data"]["event_kind"], "AfterTool", "run A: {log_a:#}");

    // Run B: the forbidden command, denied before it runs. The token comes
    // from a file, and Gemini runs as in GitHub Actions (`GITHUB_SHA` set),
    // where it strips hooks' environments down to the documented allow list.
    let session_b = "e2e6e000-0000-4000-8000-00000000000b";
    let cmd_b = "touch denied.txt";
    let github = [("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")];
    let run_b = run_gemini(&env, &workdir, session_b, cmd_b, Token::File(&token_file), &github, "gemini-b").await;
    eprintln!("e2e: run B done after {:.1}s", started.elapsed().as_secs_f64());
    let (call_b, result_b) = run_b.tool_call();
    assert_eq!(call_b["parameters"]["command"], cmd_b, "run B\n{}", run_b.dump());
    assert!(!workdir.join("denied.txt").exists(), "run B: the forbidden command ran\n{}", run_b.dump());
    assert_eq!(result_b["status"], "error", "run B: the model was not told the call failed\n{}", run_b.dump());

    let receipt_b = before_tool_receipt(&server, session_b, &run_b).await;
    let receipt_id_b = receipt_b["receipt_id"].as_str().expect("receipt_id");
    assert_eq!(receipt_b["decision"]["result"], "DENY", "run B: {receipt_b:#}");
    assert_eq!(receipt_b["decision"]["policy"]["policy_ids"], json!([FORBID_POLICY]), "run B: {receipt_b:#}");
    assert_eq!(receipt_b["decision"]["policy"]["pack"], PACK, "run B: {receipt_b:#}");
    assert_eq!(receipt_b["action"]["original_tool"], "run_shell_command", "run B: {receipt_b:#}");
    assert_eq!(receipt_b["action"]["parameters"]["command"], cmd_b, "run B: {receipt_b:#}");
    assert_eq!(receipt_b["vendor"]["reply"]["body"]["decision"], "deny", "run B: what Gemini was told: {receipt_b:#}");
    // Gemini relayed Arbiter's reason, with the receipt id, to the model.
    let relayed = result_b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        relayed.starts_with("Tool execution blocked: denied by policy:")
            && relayed.contains("forbids any shell command that names denied.txt")
            && relayed.contains(receipt_id_b),
        "run B: the model was not given Arbiter's reason and receipt {receipt_id_b}\n{}",
        run_b.dump()
    );
    assert_eq!(run_b.answer(), FINAL_TEXT, "run B\n{}", run_b.dump());
    let (kinds, log_b) = session_log(&server, session_b).await;
    assert_eq!(kinds, ["session_start", "intent", "action", "session_end"], "run B: session log {log_b:#}");
    assert_eq!(entry(&log_b, "action")["data"]["decision"], "DENY", "run B: {log_b:#}");

    // Run C: as in GitHub Actions again, but without the allow list: Gemini
    // strips the token from the hooks' environment and the shim, with no
    // token, blocks the turn at the prompt hook.
    let mut no_allow_list = settings.clone();
    no_allow_list.as_object_mut().expect("settings object").remove("security");
    let work_c = tmp.path().join("work-no-allow-list");
    write_gemini_settings(&work_c, &no_allow_list);
    let session_c = "e2e6e000-0000-4000-8000-00000000000c";
    let run_c = run_gemini(&env, &work_c, session_c, cmd_a, Token::File(&token_file), &github, "gemini-c").await;
    assert!(!work_c.join("allowed.txt").exists(), "run C: ran without a token\n{}", run_c.dump());
    assert!(run_c.of_type("tool_use").is_empty(), "run C: a tool was requested\n{}", run_c.dump());
    assert!(
        run_c.warned("Agent execution blocked: arbiter hook: no ingress token"),
        "run C: the turn was not blocked for the missing token\n{}",
        run_c.dump()
    );

    // Every receipt verifies independently (signature, hash chain).
    verify_receipts(&server.all_receipts().await, &server.keys().await).expect("receipts verify");

    // Arbiter down from here on.
    server.kill();
    let cmd_down = "touch while-arbiter-down.txt";

    // Run D: the documented hooks. The prompt hook already blocks the turn.
    let session_d = "e2e6e000-0000-4000-8000-00000000000d";
    let run_d =
        run_gemini(&env, &workdir, session_d, cmd_down, Token::Env(&server.ingress_token), &[], "gemini-d").await;
    assert!(!workdir.join("while-arbiter-down.txt").exists(), "run D: ran with Arbiter down\n{}", run_d.dump());
    assert!(run_d.of_type("tool_use").is_empty(), "run D: a tool was requested\n{}", run_d.dump());
    assert!(
        run_d.warned("Agent execution blocked: arbiter hook: Arbiter is unreachable"),
        "run D: the turn was not blocked for Arbiter being down\n{}",
        run_d.dump()
    );

    // Run E: only BeforeTool hooked. The tool call itself is blocked.
    let mut before_tool_only = settings.clone();
    before_tool_only["hooks"] = json!({ "BeforeTool": settings["hooks"]["BeforeTool"] });
    let work_e = tmp.path().join("work-before-tool-only");
    write_gemini_settings(&work_e, &before_tool_only);
    let session_e = "e2e6e000-0000-4000-8000-00000000000e";
    let run_e =
        run_gemini(&env, &work_e, session_e, cmd_down, Token::Env(&server.ingress_token), &[], "gemini-e").await;
    let (call_e, result_e) = run_e.tool_call();
    assert_eq!(call_e["parameters"]["command"], cmd_down, "run E\n{}", run_e.dump());
    assert!(!work_e.join("while-arbiter-down.txt").exists(), "run E: ran with Arbiter down\n{}", run_e.dump());
    let reason_e = result_e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        reason_e.starts_with("Tool execution blocked: arbiter hook: Arbiter is unreachable"),
        "run E: not blocked for Arbiter being down\n{}",
        run_e.dump()
    );

    eprintln!("e2e: passed in {:.1}s", started.elapsed().as_secs_f64());
}
