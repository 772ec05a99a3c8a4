//! Acceptance tests for the governed hook path (issue 2). Each test starts the
//! real `arbiter` binary on 127.0.0.1:0 with its own temp data dir and talks to
//! it over HTTP only, using the real Claude Code 2.1.330 payloads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    Server, ServerOptions, fixture, flip_one_char, pre_tool_use_bash, receipt_hash, run_verify, run_verify_with,
    verify_receipts,
};
use serde_json::{Value, json};

/// Claude Code only acts on HTTP 200 + a JSON object body; checks that and
/// returns the PreToolUse decision fields.
fn assert_pre_tool_use_reply(r: &common::Reply) -> (String, Option<String>) {
    assert_eq!(r.status, 200, "Claude Code ignores non-200 replies: {}", r.text);
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let body = r.json();
    let hso = &body["hookSpecificOutput"];
    assert_eq!(hso["hookEventName"], "PreToolUse", "reply {body}");
    let decision =
        hso["permissionDecision"].as_str().unwrap_or_else(|| panic!("no permissionDecision in {body}")).to_owned();
    assert!(
        ["allow", "deny", "ask", "defer"].contains(&decision.as_str()),
        "permissionDecision {decision:?} is not a Claude Code value"
    );
    let reason = hso["permissionDecisionReason"].as_str().map(str::to_owned);
    (decision, reason)
}

/// A reply Claude Code treats as "no decision": a JSON object that neither
/// blocks nor stops.
fn assert_neutral_reply(r: &common::Reply, what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text);
    let body = r.json();
    assert!(body.is_object(), "{what}: reply is not a JSON object: {body}");
    assert_ne!(body["decision"], "block", "{what}: neutral reply blocks: {body}");
    assert_ne!(body["continue"], false, "{what}: neutral reply stops Claude: {body}");
    assert!(
        body["hookSpecificOutput"]["permissionDecision"].is_null(),
        "{what}: neutral reply carries a permission decision: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_without_auth() {
    let server = Server::start();
    for path in ["/healthz", "/readyz"] {
        let r = server.get(path, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        assert_eq!(r.json()["status"], "ok", "{path}: {}", r.text);
    }
}

#[test]
fn first_start_creates_private_tokens_and_signing_key() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start();
    for file in ["ingress.token", "admin.token", "keys/receipt-signing.pem"] {
        let meta = std::fs::metadata(server.data_dir.join(file)).expect("credential file exists");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file} must be owner-only");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_is_allowed_and_rm_rf_root_is_denied_with_a_reason() {
    let server = Server::start();
    let session = "1f1d3d5f-e2c5-4c9e-aca7-cc8c3ee93249";

    let r = server.hook("claude-code", &pre_tool_use_bash("ls", session)).await;
    let (decision, _) = assert_pre_tool_use_reply(&r);
    assert_eq!(decision, "allow", "ls: {}", r.text);
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("ALLOW"));
    let allow_id = r.receipt_id();

    let r = server.hook("claude-code", &pre_tool_use_bash("rm -rf /", session)).await;
    let (decision, reason) = assert_pre_tool_use_reply(&r);
    assert_eq!(decision, "deny", "rm -rf /: {}", r.text);
    let reason = reason.unwrap_or_default();
    assert!(!reason.trim().is_empty(), "deny without a reason: {}", r.text);
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("DENY"));
    let deny_id = r.receipt_id();
    assert_ne!(allow_id, deny_id);

    // The receipts say the same thing as the replies.
    let allow = server.admin_json(&format!("/v1/receipts/{allow_id}")).await;
    assert_eq!(allow["decision"]["result"], "ALLOW");
    assert_eq!(allow["action"]["tool"], "shell");
    assert_eq!(allow["action"]["operation"], "exec");
    assert_eq!(allow["action"]["original_tool"], "Bash");
    assert_eq!(allow["action"]["parameters"]["command"], "ls");
    assert_eq!(allow["action"]["requester_context"]["session"], session);
    assert_eq!(allow["action"]["requester_context"]["asserted_by"], "vendor");
    let deny = server.admin_json(&format!("/v1/receipts/{deny_id}")).await;
    assert_eq!(deny["decision"]["result"], "DENY");
    assert_eq!(deny["action"]["parameters"]["command"], "rm -rf /");
    assert!(deny["decision"]["reason"].as_str().is_some_and(|s| !s.is_empty()), "deny receipt without reason: {deny}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_decision_events_get_neutral_replies_and_build_session_context() {
    let server = Server::start();
    let session = "1fc5413d-8515-4e57-add6-75095dbf2139";
    for name in ["UserPromptSubmit.json", "PostToolUse-Write.json", "PostToolUse.json", "Stop.json", "SessionEnd.json"]
    {
        let r = server.hook("claude-code", &fixture(name)).await;
        assert_neutral_reply(&r, name);
    }

    let s = server.admin_json(&format!("/v1/sessions/{session}")).await;
    assert_eq!(s["session_id"], session, "{s}");
    let entries = s["entries"].as_array().unwrap_or_else(|| panic!("no entries: {s}"));
    let kind = |e: &Value| e["kind"].as_str().unwrap_or_default().to_ascii_lowercase();
    let intent = entries
        .iter()
        .find(|e| kind(e).contains("intent"))
        .unwrap_or_else(|| panic!("no intent entry in session: {s}"));
    assert!(intent["data"].to_string().contains("run the greeting"), "intent entry lacks the prompt: {intent}");
    let obs = entries
        .iter()
        .find(|e| kind(e).contains("observation"))
        .unwrap_or_else(|| panic!("no observation entry in session: {s}"));
    assert!(obs["data"].to_string().contains("Write"), "observation entry lacks the tool: {obs}");
    // Session entries are hash-linked in order.
    for w in entries.windows(2) {
        assert_eq!(w[1]["prev_hash"], w[0]["hash"], "session chain broken: {s}");
        assert!(w[1]["seq"].as_u64() > w[0]["seq"].as_u64(), "session seq not increasing: {s}");
    }

    // The other fixture's session only got its observation.
    let other = server.admin_json("/v1/sessions/1f1d3d5f-e2c5-4c9e-aca7-cc8c3ee93249").await;
    let other_entries = other["entries"].as_array().unwrap_or_else(|| panic!("{other}"));
    assert!(
        other_entries.iter().any(|e| kind(e).contains("observation")),
        "no observation for PostToolUse.json's session: {other}"
    );
}

/// Sends a fixed mix of decisions; returns (receipt id, session, decision).
async fn make_decisions(server: &Server) -> Vec<(String, String, String)> {
    let cases = [
        ("ls", "sess-a", "ALLOW"),
        ("rm -rf /", "sess-a", "DENY"),
        ("git status", "sess-b", "ALLOW"),
        ("cat README.md", "sess-a", "ALLOW"),
        ("mkfs.ext4 /dev/sda1", "sess-b", "DENY"),
    ];
    let mut out = Vec::new();
    for (cmd, session, want) in cases {
        let r = server.hook("claude-code", &pre_tool_use_bash(cmd, session)).await;
        assert_eq!(r.status, 200, "{cmd}: {}", r.text);
        assert_eq!(r.header("x-arbiter-decision").as_deref(), Some(want), "{cmd}: {}", r.text);
        out.push((r.receipt_id(), session.to_owned(), want.to_owned()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_has_a_signed_chained_receipt_listed_by_the_review_api() {
    let server = Server::start();
    let made = make_decisions(&server).await;

    // Paging with limit=2 returns every receipt once, in chain order.
    let all = server.receipts_paged("", 2).await;
    let ids: Vec<&str> = all.iter().map(|r| r["receipt_id"].as_str().unwrap_or("")).collect();
    let want: Vec<&str> = made.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, want, "listed receipts differ from the acknowledged ones");
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["version"], "arbiter.receipt/v1", "{r}");
        assert_eq!(r["signature"]["algorithm"], "Ed25519", "{r}");
        assert_eq!(r["chain"]["seq"].as_u64(), Some(i as u64), "seq not contiguous from 0: {r}");
        let hash = r["decision"]["policy"]["hash"].as_str().unwrap_or_default();
        assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64, "policy hash {hash:?}");
        let pids = r["decision"]["policy"]["policy_ids"].as_array();
        assert!(pids.is_some_and(|p| !p.is_empty()), "no policy ids: {r}");
        assert_eq!(r["decision"]["result"], made[i].2.as_str(), "{r}");
        assert_eq!(r["vendor"]["integration"], "claude-code", "{r}");
        assert_eq!(r["vendor"]["event_kind"], "PreToolUse", "{r}");
    }
    assert_eq!(all[0]["chain"]["prev_hash"], common::GENESIS);

    // Filters.
    let a = server.receipts_paged("session_id=sess-a", 100).await;
    assert_eq!(a.len(), 3, "session_id=sess-a");
    assert!(a.iter().all(|r| r["action"]["requester_context"]["session"] == "sess-a"));
    let denied = server.receipts_paged("decision=DENY", 100).await;
    assert_eq!(denied.len(), 2, "decision=DENY");
    assert!(denied.iter().all(|r| r["decision"]["result"] == "DENY"));
    let both = server.receipts_paged("session_id=sess-b&decision=ALLOW", 100).await;
    assert_eq!(both.len(), 1, "session_id=sess-b&decision=ALLOW");

    // Get by id returns the very same receipt.
    for r in &all {
        let id = r["receipt_id"].as_str().unwrap_or_default();
        let one = server.admin_json(&format!("/v1/receipts/{id}")).await;
        assert_eq!(&one, r, "GET /v1/receipts/{id} differs from the listed receipt");
    }

    // Review routes need the auditor role: the ingress token gets 403, no token 401.
    let id = &made[0].0;
    for path in [
        "/v1/receipts".to_owned(),
        format!("/v1/receipts/{id}"),
        "/v1/keys".to_owned(),
        "/v1/sessions/sess-a".to_owned(),
    ] {
        let r = server.get(&path, Some(&server.ingress_token)).await;
        assert_eq!(r.status, 403, "{path} with ingress token: {}", r.text);
        let r = server.get(&path, None).await;
        assert_eq!(r.status, 401, "{path} without token: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_verify_offline_and_tampering_is_detected() {
    let server = Server::start();
    make_decisions(&server).await;
    let receipts = server.all_receipts().await;
    let keys = server.keys().await;
    let key = &keys["keys"][0];
    assert_eq!(key["algorithm"], "Ed25519", "{keys}");
    assert!(key["key_id"].as_str().is_some_and(|s| !s.is_empty()), "{keys}");

    // A third party with only JCS + Ed25519 + sha256 can verify them.
    if let Err(e) = verify_receipts(&receipts, &keys) {
        panic!("independent verification failed: {e}");
    }

    // And so does `arbiter verify`.
    let out = run_verify(server.root(), "good", &receipts, &keys);
    assert_eq!(out.code, Some(0), "arbiter verify rejected good receipts: {}", out.all());
    assert!(out.stdout.contains("ok"), "verify output: {}", out.all());
    let out = run_verify_with(server.root(), "complete", &receipts, &keys, &["--require-complete"]);
    assert_eq!(out.code, Some(0), "strict verify rejected the full log: {}", out.all());

    // A receipt deleted from the middle of a full export: tolerated as a gap
    // for filtered exports, refused in strict mode.
    let mut holed = receipts.clone();
    holed.remove(1);
    let out = run_verify_with(server.root(), "holed", &holed, &keys, &["--require-complete"]);
    assert_ne!(out.code, Some(0), "strict verify accepted a log with a receipt removed: {}", out.all());
    assert!(out.all().contains("gap"), "strict verify did not report the gap: {}", out.all());

    // One flipped character in the requester context of a middle receipt.
    let victim = 2;
    let victim_id = receipts[victim]["receipt_id"].as_str().unwrap_or_default().to_owned();
    let mut tampered = receipts.clone();
    let session = tampered[victim]["action"]["requester_context"]["session"].as_str().unwrap_or_default().to_owned();
    tampered[victim]["action"]["requester_context"]["session"] = Value::from(flip_one_char(&session));
    assert!(verify_receipts(&tampered, &keys).is_err(), "own verifier missed the tamper");
    let out = run_verify(server.root(), "session", &tampered, &keys);
    assert_ne!(out.code, Some(0), "verify accepted a tampered session: {}", out.all());
    assert!(out.all().contains(&victim_id), "verify did not name {victim_id}: {}", out.all());

    // One flipped character in the policy hash.
    let mut tampered = receipts.clone();
    let hash = tampered[victim]["decision"]["policy"]["hash"].as_str().unwrap_or_default().to_owned();
    tampered[victim]["decision"]["policy"]["hash"] = Value::from(flip_one_char(&hash));
    let out = run_verify(server.root(), "policy", &tampered, &keys);
    assert_ne!(out.code, Some(0), "verify accepted a tampered policy hash: {}", out.all());
    assert!(out.all().contains(&victim_id), "verify did not name {victim_id}: {}", out.all());
}

fn faulty_plugin() -> PathBuf {
    PathBuf::from(env!("ARBITER_TEST_PLUGIN_FAULTY"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_faults_give_a_blocking_reply_and_a_receipt_naming_the_fault() {
    let config = r#"
[plugins]
deadline_ms = 50
memory_limit_mib = 32

[integrations.claude-code]
plugin = "claude-code"

[integrations.faulty]
plugin = "faulty"
"#;
    let server = Server::start_with(ServerOptions {
        config: Some(config.to_owned()),
        plugins: vec![("faulty".to_owned(), faulty_plugin())],
    });

    // (fault, expected fault.kind)
    let faults = [
        ("trap", "trap"),
        ("loop", "deadline"),
        ("memory", "memory"),
        ("malformed", "malformed"),
        ("encode-trap", "trap"),
    ];
    // Every fault is checked before failing, so one report shows them all.
    let mut failures: Vec<String> = Vec::new();
    macro_rules! check {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                failures.push(format!($($msg)+));
            }
        };
    }
    for (fault, kind) in faults {
        let body = json!({"fault": fault, "session_id": format!("fault-{fault}")});
        let started = Instant::now();
        let r = server.hook("faulty", &body).await;
        let elapsed = started.elapsed();
        // Deadline is 50 ms; 2 s leaves room for a loaded CI machine while
        // still proving the call was cut short (a real loop never returns).
        check!(elapsed < Duration::from_secs(2), "{fault}: answered after {elapsed:?}");
        check!(r.status == 200, "{fault}: status {}: {}", r.status, r.text);
        let reply: Value = serde_json::from_str(&r.text).unwrap_or(Value::Null);
        check!(
            reply["blocked"] == true && reply["decision"] == "deny",
            "{fault}: reply is not the plugin's blocking reply: {}",
            r.text
        );
        check!(reply["reason"].as_str().is_some_and(|s| !s.is_empty()), "{fault}: reply without reason: {}", r.text);
        let decision = r.header("x-arbiter-decision");
        check!(decision.as_deref() == Some("DENY"), "{fault}: x-arbiter-decision {decision:?}");
        let Some(id) = r.header("x-arbiter-receipt-id") else {
            failures.push(format!("{fault}: no x-arbiter-receipt-id header"));
            continue;
        };
        let receipt = server.admin_json(&format!("/v1/receipts/{id}")).await;
        check!(receipt["decision"]["result"] == "DENY", "{fault}: receipt result {}", receipt["decision"]["result"]);
        let f = &receipt["decision"]["fault"];
        check!(
            f["kind"] == kind && f["component"] == "plugin",
            "{fault}: receipt fault {f}, want kind {kind:?} component \"plugin\""
        );
        check!(f["message"].as_str().is_some_and(|s| !s.is_empty()), "{fault}: fault without message: {f}");
        check!(receipt["vendor"]["plugin"] == "faulty", "{fault}: vendor.plugin {}", receipt["vendor"]["plugin"]);
    }

    // The server keeps serving both the faulty integration and Claude Code.
    let r = server.hook("faulty", &json!({"fault": "none", "session_id": "fault-none"})).await;
    assert_eq!(r.status, 200, "none: {}", r.text);
    assert_eq!(r.json()["decision"], "allow", "none: {}", r.text);
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("ALLOW"), "none");
    let r = server.hook("claude-code", &pre_tool_use_bash("ls", "after-faults")).await;
    let (decision, _) = assert_pre_tool_use_reply(&r);
    assert_eq!(decision, "allow", "ls after faults: {}", r.text);

    assert!(failures.is_empty(), "fault handling:\n{}", failures.join("\n"));

    // Fault receipts are chained and signed like any other.
    let receipts = server.all_receipts().await;
    if let Err(e) = verify_receipts(&receipts, &server.keys().await) {
        panic!("receipts after faults do not verify: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_any_decision() {
    let server = Server::start();
    let body = serde_json::to_vec(&pre_tool_use_bash("ls", "bad-requests")).unwrap();
    let before = server.all_receipts().await.len();

    // Missing and wrong token: 401, JSON error, no decision, no receipt.
    for (what, token) in [("missing token", None), ("wrong token", Some("not-the-token"))] {
        let r = server.post_raw("/v1/hooks/claude-code", token, body.clone()).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert!(r.json()["error"]["code"].is_string(), "{what}: {}", r.text);
        assert!(r.header("x-arbiter-decision").is_none(), "{what} made a decision");
        assert!(r.header("x-arbiter-receipt-id").is_none(), "{what} wrote a receipt");
        let r = server.post_raw("/v1/evaluate", token, body.clone()).await;
        assert_eq!(r.status, 401, "evaluate, {what}: {}", r.text);
    }
    // The admin token is not an ingress token either (admin does not imply ingress).
    let admin = server.admin_token.clone();
    let r = server.post_raw("/v1/hooks/claude-code", Some(&admin), body.clone()).await;
    assert_eq!(r.status, 403, "admin token on ingress: {}", r.text);
    assert_eq!(server.all_receipts().await.len(), before, "a refused request wrote a receipt");

    // Over the 1 MiB default limit: 413.
    let mut big = pre_tool_use_bash("ls", "bad-requests");
    big["tool_input"]["description"] = Value::from("x".repeat(1024 * 1024 + 1));
    let big = serde_json::to_vec(&big).unwrap();
    let token = server.ingress_token.clone();
    let r = server.post_raw("/v1/hooks/claude-code", Some(&token), big).await;
    assert_eq!(r.status, 413, "oversized body: {}", r.text);

    // Malformed JSON: 400 with a message that says so.
    let r = server.post_raw("/v1/hooks/claude-code", Some(&token), br#"{"session_id":"#.to_vec()).await;
    assert_eq!(r.status, 400, "malformed JSON: {}", r.text);
    let err = r.json();
    let msg = err["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.to_ascii_lowercase().contains("json"), "message does not mention JSON: {err}");

    // Unknown integration: 404.
    let r = server.post_raw("/v1/hooks/no-such-vendor", Some(&token), body.clone()).await;
    assert_eq!(r.status, 404, "unknown integration: {}", r.text);
    assert!(r.json()["error"]["code"].is_string(), "{}", r.text);

    assert_eq!(server.all_receipts().await.len(), before, "a refused request wrote a receipt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_decides_canonical_actions_and_rejects_schema_violations() {
    let server = Server::start();
    let token = server.ingress_token.clone();
    let action = |cmd: &str| {
        json!({
            "tool": "shell",
            "operation": "exec",
            "parameters": {"command": cmd},
            "resource": null,
            "original_tool": "Bash",
            "requester_context": {"session": "sdk-session", "agent": "sdk-agent"}
        })
    };

    let r = server.post_raw("/v1/evaluate", Some(&token), serde_json::to_vec(&action("ls")).unwrap()).await;
    assert_eq!(r.status, 200, "ls: {}", r.text);
    let v = r.json();
    assert_eq!(v["decision"], "ALLOW", "{v}");
    assert!(v["reason"].is_string(), "{v}");
    assert!(v["receipt_id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");

    let r = server.post_raw("/v1/evaluate", Some(&token), serde_json::to_vec(&action("rm -rf /")).unwrap()).await;
    assert_eq!(r.status, 200, "rm -rf /: {}", r.text);
    let v = r.json();
    assert_eq!(v["decision"], "DENY", "{v}");
    assert!(v["reason"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let id = v["receipt_id"].as_str().unwrap_or_else(|| panic!("no receipt_id: {v}"));
    let receipt = server.admin_json(&format!("/v1/receipts/{id}")).await;
    assert_eq!(receipt["decision"]["result"], "DENY", "{receipt}");
    assert_eq!(receipt["action"]["requester_context"]["session"], "sdk-session");
    assert_eq!(receipt["action"]["requester_context"]["asserted_by"], "caller");

    // Schema violations: 400.
    let mut bad_tool = action("ls");
    bad_tool["tool"] = Value::from("Shell Exec!");
    let mut missing_ctx = action("ls");
    missing_ctx.as_object_mut().unwrap().remove("requester_context");
    let mut extra = action("ls");
    extra["surprise"] = Value::from(1);
    for (what, body) in [("bad tool", bad_tool), ("missing requester_context", missing_ctx), ("extra field", extra)] {
        let r = server.post_raw("/v1/evaluate", Some(&token), serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert!(r.json()["error"]["message"].is_string(), "{what}: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_receipts_survive_sigkill_and_the_chain_continues() {
    let mut server = Server::start();
    let commands = ["ls", "rm -rf /", "git status", "cat README.md", "mkfs.ext4 /dev/sda1"];

    // ~50 concurrent hook requests; collect every acknowledged receipt id.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let http = server.http.clone();
        let url = server.url("/v1/hooks/claude-code");
        let token = server.ingress_token.clone();
        let body = pre_tool_use_bash(commands[i % commands.len()], &format!("crash-{}", i % 7));
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()
                .get("x-arbiter-receipt-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .expect("reply without x-arbiter-receipt-id")
        }));
    }
    let mut acked = HashSet::new();
    for t in tasks {
        acked.insert(t.await.unwrap());
    }
    assert_eq!(acked.len(), 50, "receipt ids are not unique");

    // SIGKILL right after the replies: no graceful shutdown, no final flush.
    server.kill();
    server.restart();

    for id in &acked {
        let r = server.get(&format!("/v1/receipts/{id}"), Some(&server.admin_token)).await;
        assert_eq!(r.status, 200, "acknowledged receipt {id} lost after SIGKILL: {}", r.text);
        assert_eq!(r.json()["receipt_id"], id.as_str());
    }
    let before = server.all_receipts().await;
    assert!(before.len() >= acked.len(), "{} receipts listed, {} acknowledged", before.len(), acked.len());
    let keys = server.keys().await;
    if let Err(e) = verify_receipts(&before, &keys) {
        panic!("chain does not verify after restart: {e}");
    }
    let out = run_verify(server.root(), "crash", &before, &keys);
    assert_eq!(out.code, Some(0), "arbiter verify after restart: {}", out.all());

    // The chain continues across the restart.
    let last = before.last().unwrap();
    let last_seq = last["chain"]["seq"].as_u64().unwrap();
    let r = server.hook("claude-code", &pre_tool_use_bash("ls", "after-restart")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.receipt_id();
    let next = server.admin_json(&format!("/v1/receipts/{id}")).await;
    assert_eq!(next["chain"]["seq"].as_u64(), Some(last_seq + 1), "{next}");
    assert_eq!(next["chain"]["prev_hash"], receipt_hash(last), "{next}");
    let after = server.all_receipts().await;
    let out = run_verify(server.root(), "crash-after", &after, &keys);
    assert_eq!(out.code, Some(0), "arbiter verify across restart: {}", out.all());
}

/// The published receipt schema with the canonical action schema it refers to.
fn receipt_validator() -> jsonschema::Validator {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit/schemas");
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join(name)).expect("schema file")).expect("schema JSON")
    };
    let action = read("canonical-action.v1.json");
    let action_id = action["$id"].as_str().expect("action schema $id").to_owned();
    jsonschema::options()
        .with_resource(action_id, jsonschema::Resource::from_contents(action).expect("action schema resource"))
        .build(&read("receipt.v1.json"))
        .expect("receipt schema compiles")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_receipt_conforms_to_the_published_schema() {
    let config = "[integrations.faulty]\nplugin = \"faulty\"\n";
    let server = Server::start_with(ServerOptions {
        config: Some(config.to_owned()),
        plugins: vec![("faulty".to_owned(), faulty_plugin())],
    });
    // A policy ALLOW, a forbidden DENY, a plugin fault, a malformed-output
    // fault and an SDK evaluation: every shape of receipt this build writes.
    server.hook("claude-code", &pre_tool_use_bash("ls", "schema")).await;
    server.hook("claude-code", &pre_tool_use_bash("rm -rf /", "schema")).await;
    server.hook("faulty", &json!({"fault": "trap", "session_id": "schema"})).await;
    server.hook("faulty", &json!({"fault": "malformed", "session_id": "schema"})).await;
    let token = Some(server.ingress_token.as_str());
    let body = json!({"tool": "file", "operation": "read", "resource": "/etc/hostname",
                      "requester_context": {"session": "schema-sdk", "agent": "sdk-agent", "roles": ["dev"]}});
    let r = server.post_raw("/v1/evaluate", token, serde_json::to_vec(&body).expect("json")).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let validator = receipt_validator();
    let receipts = server.all_receipts().await;
    assert_eq!(receipts.len(), 5, "one receipt per decision: {receipts:?}");
    for r in &receipts {
        let errors: Vec<String> = validator.iter_errors(r).map(|e| format!("{e} at {}", e.instance_path)).collect();
        assert!(errors.is_empty(), "receipt breaks receipt.v1.json: {errors:?}\n{r}");
    }
    // The schema is not vacuous: a receipt without its signature is refused.
    let mut unsigned = receipts[0].clone();
    unsigned.as_object_mut().expect("object").remove("signature");
    assert!(!validator.is_valid(&unsigned), "schema accepted a receipt with no signature");
}

/// A small pack that forbids `ls`, with its own test.
fn pack_forbidding_ls(test_expects: &str) -> Value {
    json!({"files": {
        "pack.toml": "name = \"no-ls\"\nversion = \"2.0.0\"\ndefault_posture = \"ALLOW\"\n",
        "rules.cedar": "@id(\"no-ls.forbid\") @classification(\"forbidden\") @reason(\"ls is not allowed here\")\nforbid(principal, action == Action::\"shell.exec\", resource) when { context.signals.contains(\"ls\") };\n",
        "detectors.toml": "[[detector]]\nid = \"ls\"\nfields = [\"command\"]\npattern = '^ls\\b'\n",
        "tests/ls.json": format!("{{\"name\": \"ls\", \"action\": {{\"tool\": \"shell\", \"operation\": \"exec\", \"parameters\": {{\"command\": \"ls\"}}}}, \"expect\": {{\"decision\": \"{test_expects}\"}}}}"),
    }})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_packs_are_validated_then_swapped_in_and_survive_a_restart() {
    let mut server = Server::start();
    let admin = server.admin_token.clone();
    let before = server.admin_json("/v1/policies").await;
    assert_eq!(before["active"]["pack"], "baseline", "{before}");

    // A pack that does not parse, and one whose own test fails, are refused.
    let broken = json!({"files": {"pack.toml": "name = \"x\"\nversion = \"1\"\n", "p.cedar": "forbid(principal"}});
    let r = server.put_json("/v1/policies", Some(&admin), &broken).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = server.put_json("/v1/policies", Some(&admin), &pack_forbidding_ls("ALLOW")).await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("FAIL"), "the refusal shows the failing test: {}", r.text);
    let r = server
        .post_raw("/v1/policies/validate", Some(&admin), serde_json::to_vec(&pack_forbidding_ls("DENY")).unwrap())
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Refused and validated packs changed nothing.
    let ls = server.hook("claude-code", &pre_tool_use_bash("ls", "packs")).await;
    assert_eq!(ls.header("x-arbiter-decision").as_deref(), Some("ALLOW"), "{}", ls.text);
    // The ingress token cannot manage policies.
    let r = server.put_json("/v1/policies", Some(&server.ingress_token), &pack_forbidding_ls("DENY")).await;
    assert_eq!(r.status, 403);

    // A valid pack is swapped in: the next decision uses it, and says so.
    let r = server.put_json("/v1/policies", Some(&admin), &pack_forbidding_ls("DENY")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let hash = r.json()["active"]["hash"].as_str().expect("hash").to_owned();
    assert_eq!(r.json()["previous"]["pack"], "baseline");
    let ls = server.hook("claude-code", &pre_tool_use_bash("ls", "packs")).await;
    assert_eq!(ls.header("x-arbiter-decision").as_deref(), Some("DENY"), "{}", ls.text);
    let id = ls.header("x-arbiter-receipt-id").expect("receipt");
    let receipt = server.admin_json(&format!("/v1/receipts/{id}")).await;
    assert_eq!(receipt["decision"]["policy"]["hash"], hash.as_str(), "{receipt}");
    assert_eq!(receipt["decision"]["policy"]["policy_ids"], json!(["no-ls.forbid"]), "{receipt}");
    let stored = server.admin_json(&format!("/v1/policies/{hash}")).await;
    assert!(stored["files"]["rules.cedar"].as_str().is_some_and(|c| c.contains("no-ls.forbid")), "{stored}");

    // It stays in force after a restart.
    server.restart();
    let after = server.admin_json("/v1/policies").await;
    assert_eq!(
        (after["active"]["hash"].as_str(), &after["active_is_uploaded"]),
        (Some(hash.as_str()), &json!(true)),
        "{after}"
    );
    let ls = server.hook("claude-code", &pre_tool_use_bash("ls", "packs")).await;
    assert_eq!(ls.header("x-arbiter-decision").as_deref(), Some("DENY"), "{}", ls.text);
}
