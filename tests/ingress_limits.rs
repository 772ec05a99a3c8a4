//! Ingress limits per integration, black-box against the real binary: a
//! session over its rate, an integration over its rate or its concurrency,
//! and a hook past its deadline each get the vendor's *blocking* reply (never
//! an error a vendor would take as an allow) and a receipt naming the limit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Server, ServerOptions, pre_tool_use_bash};
use serde_json::{Value, json};

async fn receipt(server: &Server, r: &common::Reply) -> Value {
    server.admin_json(&format!("/v1/receipts/{}", r.receipt_id())).await
}

fn assert_refused_by(receipt: &Value, kind: &str, limit: &str) {
    let fault = &receipt["decision"]["fault"];
    assert_eq!(receipt["decision"]["result"], "DENY", "{receipt}");
    assert_eq!((fault["component"].as_str(), fault["kind"].as_str()), (Some("ingress"), Some(kind)), "{receipt}");
    assert!(fault["message"].as_str().unwrap().contains(limit), "the receipt names the limit: {fault}");
    assert!(receipt["decision"]["reason"].as_str().unwrap().contains(limit), "{receipt}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A session over its rate is blocked in Claude Code's deny form, with a
// receipt of the refused action; other sessions go on.
async fn a_session_over_its_rate_is_blocked_and_others_are_not() {
    let config = "[integrations.claude-code]\nplugin = \"claude-code\"\n\
                  [integrations.claude-code.limits]\nsession_requests_per_minute = 3\n";
    let server = Server::start_with(ServerOptions { config: Some(config.to_owned()), ..ServerOptions::default() });
    for i in 0..3 {
        let r = server.hook("claude-code", &pre_tool_use_bash(&format!("ls {i}"), "chatty")).await;
        assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("ALLOW"), "request {i}: {}", r.text);
    }
    let r = server.hook("claude-code", &pre_tool_use_bash("ls 4", "chatty")).await;
    assert_eq!(r.status, 200, "a blocking reply, not an error the vendor takes as allow: {}", r.text);
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("DENY"));
    let out = &r.json()["hookSpecificOutput"];
    assert_eq!(out["permissionDecision"], "deny", "{}", r.text);
    assert!(out["permissionDecisionReason"].as_str().unwrap().contains("session rate limit"), "{}", r.text);
    let refused = receipt(&server, &r).await;
    assert_refused_by(&refused, "rate_limited", "session rate limit (3 requests per minute)");
    assert_eq!(refused["action"]["parameters"]["command"], "ls 4", "the refused action itself: {refused}");
    assert_eq!(refused["action"]["requester_context"]["session"], "chatty");

    // Another session is not affected.
    let r = server.hook("claude-code", &pre_tool_use_bash("ls", "quiet")).await;
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("ALLOW"), "{}", r.text);
    // The refused request did not enter the session's log.
    let s = server.admin_json("/v1/sessions/chatty").await;
    assert_eq!(s["summary"]["actions"], 3, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Copilot Studio takes no answer as an allow: over the integration's rate,
// it gets `blockAction: true`.
async fn copilot_studio_over_its_rate_gets_block_action() {
    const TOKEN: &str = "studio-test-token-0123456789";
    let config = format!(
        "[integrations.copilot-studio]\nplugin = \"copilot-studio\"\nhold_ms = 0\n\
         [integrations.copilot-studio.auth]\nkind = \"bearer\"\ntoken = \"{TOKEN}\"\n\
         [integrations.copilot-studio.limits]\nrequests_per_minute = 2\n"
    );
    let server = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/copilot-studio/2025-05-01/analyze-send-email.json");
    let body = std::fs::read(path).unwrap();
    let url = "/v1/hooks/copilot-studio/analyze-tool-execution?api-version=2025-05-01";
    for _ in 0..2 {
        let r = server.post_raw(url, Some(TOKEN), body.clone()).await;
        assert_eq!(r.json()["blockAction"], false, "{}", r.text);
    }
    let r = server.post_raw(url, Some(TOKEN), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["blockAction"], true, "{}", r.text);
    assert_refused_by(&receipt(&server, &r).await, "rate_limited", "integration rate limit (2 requests per minute)");
}

fn faulty_plugin() -> PathBuf {
    PathBuf::from(env!("ARBITER_TEST_PLUGIN_FAULTY"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A hook still unanswered at the integration's deadline is blocked at the
// deadline; while it runs, one more over the concurrency limit is refused at
// once. Both in the plugin's blocking form, with receipts.
async fn deadline_and_concurrency_limits_block_with_receipts() {
    let config = r#"
[plugins]
deadline_ms = 5000

[integrations.faulty]
plugin = "faulty"
hold_ms = 0
[integrations.faulty.limits]
timeout_ms = 1500
max_concurrent = 1
"#;
    let server = Server::start_with(ServerOptions {
        config: Some(config.to_owned()),
        plugins: vec![("faulty".to_owned(), faulty_plugin())],
    });
    let spin = json!({"fault": "loop", "session_id": "slow"});
    let (slow, busy) = tokio::join!(
        async {
            let t0 = Instant::now();
            let r = server.hook("faulty", &spin).await;
            (r, t0.elapsed())
        },
        async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let t0 = Instant::now();
            let r = server.hook("faulty", &json!({"fault": "none", "session_id": "other"})).await;
            (r, t0.elapsed())
        }
    );

    let (r, elapsed) = slow;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["blocked"], true, "{}", r.text);
    assert!(elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_millis(4500), "{elapsed:?}");
    assert_refused_by(&receipt(&server, &r).await, "deadline", "integration `faulty` answers within 1500 ms");

    let (r, elapsed) = busy;
    assert_eq!(r.json()["blocked"], true, "{}", r.text);
    assert!(elapsed < Duration::from_millis(1000), "refused at once, not queued: {elapsed:?}");
    assert_refused_by(&receipt(&server, &r).await, "overloaded", "limit of 1 hooks in flight");

    // Once the slot is free, hooks are served again.
    let r = server.hook("faulty", &json!({"fault": "none", "session_id": "other"})).await;
    assert_eq!(r.json()["decision"], "allow", "{}", r.text);
}
