//! Microsoft Copilot Studio's external threat detection, black-box: the real
//! binary serves `/v1/hooks/copilot-studio/{validate,analyze-tool-execution}`
//! with the bundled `copilot-studio` plugin, for a pack that forbids e-mail
//! outside the company. Copilot Studio allows the tool when no answer comes
//! within a second, so a held action is answered at once (`hold_ms = 0`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use common::{Server, ServerOptions};
use serde_json::{Value, json};

const TOKEN: &str = "studio-test-token-0123456789";

fn fixture(name: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/copilot-studio/2025-05-01").join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The server and the pack directory it reads (removed when dropped).
fn start() -> (Server, tempfile::TempDir) {
    let pack = tempfile::tempdir().unwrap();
    let dir = pack.path();
    std::fs::write(dir.join("pack.toml"), "name = \"studio\"\nversion = \"1.0.0\"\ndefault_posture = \"ALLOW\"\n")
        .unwrap();
    std::fs::write(
        dir.join("mail.cedar"),
        r#"@id("studio.deny.external-mail")
@classification("forbidden")
@reason("E-mail leaves the company only through the approved relay.")
forbid (principal, action == Action::"sendemail.call", resource)
when { !(context.target like "*@acme.example") };

@id("studio.step-up.refund")
@decision("STEP_UP")
@priority("10")
@approvers("finance")
@reason("Refunds need a finance approver.")
forbid (principal, action == Action::"payments.call", resource);
"#,
    )
    .unwrap();
    let config = format!(
        r#"policies = "{}"

[integrations.copilot-studio]
plugin = "copilot-studio"
hold_ms = 0
[integrations.copilot-studio.auth]
kind = "bearer"
token = "{TOKEN}"
"#,
        dir.display()
    );
    (Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() }), pack)
}

async fn analyze(server: &Server, body: &Value) -> (Value, Value) {
    let r = server
        .post_raw(
            "/v1/hooks/copilot-studio/analyze-tool-execution?api-version=2025-05-01",
            Some(TOKEN),
            serde_json::to_vec(body).unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let receipt = match r.header("x-arbiter-receipt-id") {
        Some(id) => server.admin_json(&format!("/v1/receipts/{id}")).await,
        None => Value::Null,
    };
    (r.json(), receipt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_studio_validates_then_allows_and_blocks_tool_executions() {
    let (server, _pack) = start();
    // Setup handshake: empty body, the vendor's OK.
    let r = server.post_raw("/v1/hooks/copilot-studio/validate?api-version=2025-05-01", Some(TOKEN), Vec::new()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"isSuccessful": true, "status": "OK"}));
    // Only the integration's own credential is accepted.
    let r = server.post_raw("/v1/hooks/copilot-studio/validate", Some(&server.ingress_token), Vec::new()).await;
    assert_eq!(r.status, 401);

    // The captured e-mail to test@example.com: outside the company → blocked.
    let (reply, receipt) = analyze(&server, &fixture("analyze-send-email.json")).await;
    assert_eq!(reply["blockAction"], true, "{reply}");
    assert_eq!(reply["reasonCode"], 1001);
    assert!(reply["reason"].as_str().unwrap().contains("approved relay"), "{reply}");
    assert_eq!(receipt["decision"]["result"], "DENY");
    assert_eq!(receipt["decision"]["classification"], "forbidden");
    assert_eq!(receipt["action"]["tool"], "sendemail");
    assert_eq!(receipt["action"]["original_tool"], "cra65_otpdemo.action.SendEmail-SendEmail");
    assert_eq!(receipt["action"]["resource"], "test@example.com");

    // Internal recipient → allowed; the user's message is the session intent.
    let mut internal = fixture("analyze-send-email.json");
    internal["inputValues"]["to"] = json!("ops@acme.example");
    let (reply, receipt) = analyze(&server, &internal).await;
    assert_eq!(reply, json!({"blockAction": false}));
    assert_eq!(receipt["decision"]["result"], "ALLOW");
    let session = receipt["action"]["requester_context"]["session"].as_str().unwrap().to_owned();
    let s = server.admin_json(&format!("/v1/sessions/{session}")).await;
    assert_eq!(s["summary"]["latest_intent"], "use the send email tool", "{s}");
    assert_eq!(s["summary"]["intents"], 1, "the repeated user message is one intent: {s}");

    // STEP_UP cannot wait here: blocked at once with the approval's code.
    let mut refund = fixture("analyze-send-email.json");
    refund["toolDefinition"]["id"] = json!("cra65_otpdemo.action.Payments-Refund");
    let t0 = std::time::Instant::now();
    let (reply, receipt) = analyze(&server, &refund).await;
    assert!(t0.elapsed() < std::time::Duration::from_secs(1), "answered after {:?}", t0.elapsed());
    assert_eq!((reply["blockAction"].as_bool(), reply["reasonCode"].as_i64()), (Some(true), Some(1002)), "{reply}");
    assert_eq!(receipt["decision"]["result"], "STEP_UP");
    assert!(receipt["approval"]["id"].as_str().unwrap().starts_with("apr-"), "{receipt}");
}
