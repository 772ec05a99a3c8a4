//! STEP_UP and DEFER as workflows (issue 4), black-box: the real binary with
//! the bundled `aarm-conformance` pack, real Claude Code payloads, approvers
//! with their own tokens, a webhook receiver on loopback, restarts.
//!
//! AARM rows: R4 (STEP_UP / DEFER never answered → DENY after the
//! deadline), R5 (receipt of a deferred action: reason, resolution method,
//! resolution time) and R6 (the resolution receipt keeps the original
//! submitter's identity; the resolver is recorded apart).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Server, ServerOptions, fixture, verify_receipts};
use serde_json::{Value, json};

const ALICE: &str = "alice-approver-token-0001";
const BOB: &str = "bob-approver-token-000002";
const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";

/// Config: the conformance pack, STEP_UP through Arbiter's approval service
/// (`hold`), alice approving for platform-oncall, bob for data-owners.
fn config(extra: &str) -> String {
    let pack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance");
    format!(
        r#"policies = "{}"

[integrations.claude-code]
plugin = "claude-code"
step_up = "hold"
settings = {{ human = "ana@acme.example" }}

[auth.approvers."alice@acme.example"]
token = "{ALICE}"
groups = ["platform-oncall"]

[auth.approvers."bob@acme.example"]
token = "{BOB}"
groups = ["data-owners"]

{extra}
"#,
        pack.display()
    )
}

fn start(extra: &str) -> Server {
    Server::start_with(ServerOptions { config: Some(config(extra)), ..ServerOptions::default() })
}

fn pre(session: &str, tool: &str, input: Value) -> Value {
    let mut v = fixture("PreToolUse.json");
    v["session_id"] = json!(session);
    v["tool_name"] = json!(tool);
    v["tool_input"] = input;
    v
}

fn infra_write(content: &str) -> Value {
    json!({"file_path": "/srv/repo/infra/main.tf", "content": content})
}

/// What Claude Code was told, and the receipt behind it.
struct Answer {
    told: String,
    reason: String,
    receipt: Value,
    elapsed: Duration,
}

async fn ask(server: &Server, body: &Value) -> Answer {
    let t0 = Instant::now();
    let r = server.hook("claude-code", body).await;
    let elapsed = t0.elapsed();
    assert_eq!(r.status, 200, "{}", r.text);
    let out = &r.json()["hookSpecificOutput"];
    let id = r.header("x-arbiter-receipt-id").expect("receipt id");
    Answer {
        told: out["permissionDecision"].as_str().unwrap_or_default().to_owned(),
        reason: out["permissionDecisionReason"].as_str().unwrap_or_default().to_owned(),
        receipt: server.admin_json(&format!("/v1/receipts/{id}")).await,
        elapsed,
    }
}

async fn post(server: &Server, path: &str, token: &str, body: Value) -> common::Reply {
    server.post_raw(path, Some(token), serde_json::to_vec(&body).unwrap()).await
}

async fn get_as(server: &Server, path: &str, token: &str) -> Value {
    let r = server.get(path, Some(token)).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text);
    r.json()
}

/// Poll until `f` holds (bounded).
async fn eventually<F: Fn(&Value) -> bool>(server: &Server, path: &str, f: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let v = server.admin_json(path).await;
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting on {path}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The receipt that resolves `original` (follow-up with `resolves`).
async fn follow_up(server: &Server, member: &str, original: &str) -> Value {
    let all = server.all_receipts().await;
    all.into_iter()
        .find(|r| r[member]["resolves"] == original && r["vendor"]["reply"].is_null())
        .unwrap_or_else(|| panic!("no {member} receipt resolves {original}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// STEP_UP approved → the identical retried action is allowed once; a changed
// argument is not. Only an approver of the policy's group may approve; the
// follow-up receipt keeps the submitter and names the approver.
async fn an_approval_lets_exactly_the_approved_action_through_once() {
    let server = start("[approvals]\nhold_ms = 300\n");
    let body = pre("apr-1", "Write", infra_write("resource \"aws_s3_bucket\" \"logs\" {}\n"));
    let held = ask(&server, &body).await;
    assert_eq!(held.told, "deny", "while pending the agent is blocked: {}", held.reason);
    assert_eq!(held.receipt["decision"]["result"], "STEP_UP", "{}", held.receipt);
    let approval = &held.receipt["approval"];
    let id = approval["id"].as_str().unwrap().to_owned();
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["approvers"], json!(["platform-oncall"]));
    assert!(held.reason.contains(&id) && held.reason.contains("retry"), "{}", held.reason);

    // The approver sees it with the full action and context.
    let pending = get_as(&server, "/v1/approvals?status=pending", ALICE).await;
    let listed = &pending["approvals"][0];
    assert_eq!(listed["id"], id.as_str(), "{pending}");
    assert_eq!(listed["action"]["parameters"]["file_path"], "/srv/repo/infra/main.tf");
    assert_eq!(listed["args_hash"], approval["args_hash"]);
    assert!(listed["session_view"].is_object() && listed["reason"].as_str().unwrap().contains("platform"));

    // Retrying before approval: still pending, the same approval.
    let again = ask(&server, &body).await;
    assert_eq!((again.told.as_str(), again.receipt["approval"]["id"].as_str()), ("deny", Some(id.as_str())));

    // Wrong group, no token: refused.
    let r = post(&server, &format!("/v1/approvals/{id}/approve"), BOB, json!({})).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = server.post_raw(&format!("/v1/approvals/{id}/approve"), None, b"{}".to_vec()).await;
    assert_eq!(r.status, 401, "{}", r.text);

    let r =
        post(&server, &format!("/v1/approvals/{id}/approve"), ALICE, json!({"comment": "planned change CHG-7"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "approved");
    let r = post(&server, &format!("/v1/approvals/{id}/deny"), ALICE, json!({})).await;
    assert_eq!(r.status, 409, "an approval is decided once: {}", r.text);

    // The follow-up receipt: the submitter's identity, the approver apart.
    let step_up_receipt = held.receipt["receipt_id"].as_str().unwrap();
    let resolution = follow_up(&server, "approval", step_up_receipt).await;
    assert_eq!(resolution["decision"]["result"], "ALLOW", "{resolution}");
    assert_eq!(resolution["approval"]["approver"], "alice@acme.example");
    assert_eq!(resolution["approval"]["comment"], "planned change CHG-7");
    assert_eq!(resolution["action"]["requester_context"]["human"], "ana@acme.example");
    assert_eq!(resolution["action"]["requester_context"]["session"], "apr-1");

    // The identical action now runs, once.
    let allowed = ask(&server, &body).await;
    assert_eq!(allowed.told, "allow", "{}", allowed.reason);
    assert_eq!(allowed.receipt["decision"]["result"], "ALLOW");
    assert_eq!(allowed.receipt["approval"]["id"], id.as_str());
    assert_eq!(allowed.receipt["approval"]["approver"], "alice@acme.example");
    let used = ask(&server, &body).await;
    assert_eq!(used.told, "deny", "one approval = one use: {}", used.reason);
    assert_ne!(used.receipt["approval"]["id"], id.as_str(), "a fresh approval is requested");

    // A changed argument is a different action.
    let changed = ask(&server, &pre("apr-1", "Write", infra_write("resource \"aws_iam_user\" \"x\" {}\n"))).await;
    assert_eq!(changed.told, "deny");
    assert_eq!(changed.receipt["decision"]["result"], "STEP_UP");
    assert_ne!(changed.receipt["approval"]["id"], id.as_str());

    verify_receipts(&server.all_receipts().await, &server.keys().await).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A held hook is answered the moment the approver decides; the approver
// group's webhook gets a signed notification.
async fn a_held_hook_is_answered_when_the_approver_decides_and_the_webhook_is_signed() {
    let (hook_url, received) = webhook_receiver().await;
    let server = Arc::new(start(&format!(
        "[approvals]\nhold_ms = 8000\npublic_url = \"http://arbiter.example\"\n\n\
         [approvals.groups.platform-oncall]\nwebhooks = [{{ url = \"{hook_url}\", secret = \"{WEBHOOK_SECRET}\" }}]\n"
    )));
    let body = pre("apr-held", "Write", infra_write("resource \"aws_s3_bucket\" \"held\" {}\n"));
    let waiting = {
        let server = server.clone();
        tokio::spawn(async move { ask(&server, &body).await })
    };
    let pending = eventually(&server, "/v1/approvals?status=pending", |v| v["approvals"][0]["id"].is_string()).await;
    let id = pending["approvals"][0]["id"].as_str().unwrap().to_owned();
    let t0 = Instant::now();
    let r = post(&server, &format!("/v1/approvals/{id}/approve"), ALICE, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let answer = waiting.await.unwrap();
    assert_eq!(answer.told, "allow", "{}", answer.reason);
    assert!(t0.elapsed() < Duration::from_secs(4), "answered {:?} after approval", t0.elapsed());
    assert!(answer.elapsed < Duration::from_secs(8), "held {:?}", answer.elapsed);
    assert_eq!(answer.receipt["approval"]["id"], id.as_str());

    // The webhook: one signed notification naming the approval.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (timestamp, signature, raw) = loop {
        if let Some(n) = received.lock().unwrap().first().cloned() {
            break n;
        }
        assert!(Instant::now() < deadline, "no webhook notification arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(arbiter::notify::verify(WEBHOOK_SECRET.as_bytes(), timestamp, &raw, &signature), "bad signature");
    assert!(!arbiter::notify::verify(b"another-secret-0123456789", timestamp, &raw, &signature));
    let notice: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(notice["approval"]["approval_id"], id.as_str(), "{notice}");
    assert_eq!(notice["approval"]["group"], "platform-oncall");
    assert_eq!(notice["approval"]["approve_url"], format!("http://arbiter.example/v1/approvals/{id}/approve"));
    assert_eq!(notice["approval"]["action"]["parameters"]["file_path"], "/srv/repo/infra/main.tf");
}

/// Notifications a receiver got: (timestamp, signature, raw body).
type Received = Arc<Mutex<Vec<(u64, String, Vec<u8>)>>>;

/// A loopback webhook receiver recording what it gets.
async fn webhook_receiver() -> (String, Received) {
    use axum::http::HeaderMap;
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let ts = h(arbiter::notify::TIMESTAMP_HEADER).parse().unwrap_or(0);
                sink.lock().unwrap().push((ts, h(arbiter::notify::SIGNATURE_HEADER), body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// STEP_UP never answered → DENY at the deadline, by itself, with a
// follow-up receipt; a pending approval survives a restart, and one whose
// deadline passed while Arbiter was down is expired on start.
async fn unanswered_approvals_expire_to_deny_even_across_a_restart() {
    // The deadline leaves room for a restart on a loaded machine (two
    // parallel builds on two cores made a restart take over 5 s).
    let mut server = start("[approvals]\nhold_ms = 100\ndeadline_secs = 12\n");
    let body = pre("apr-expire", "Write", infra_write("resource \"aws_s3_bucket\" \"a\" {}\n"));
    let held = ask(&server, &body).await;
    let id = held.receipt["approval"]["id"].as_str().unwrap().to_owned();

    // Survives a restart while pending.
    server.kill();
    server.restart();
    let hold = server.admin_json(&format!("/v1/approvals/{id}")).await;
    assert_eq!(hold["status"], "pending", "{hold}");

    let expired = eventually(&server, &format!("/v1/approvals/{id}"), |v| v["status"] == "expired").await;
    assert_eq!(expired["resolution"]["by"], "arbiter");
    let receipt = follow_up(&server, "approval", held.receipt["receipt_id"].as_str().unwrap()).await;
    assert_eq!(receipt["decision"]["result"], "DENY", "{receipt}");
    assert_eq!(receipt["decision"]["policy"]["policy_ids"], json!(["arbiter.approval.expired"]));
    assert_eq!(receipt["action"]["requester_context"]["human"], "ana@acme.example");
    let r = post(&server, &format!("/v1/approvals/{id}/approve"), ALICE, json!({})).await;
    assert_eq!(r.status, 409, "an expired approval cannot be approved: {}", r.text);

    // Expired while down.
    let held = ask(&server, &pre("apr-down", "Write", infra_write("resource \"aws_s3_bucket\" \"b\" {}\n"))).await;
    let id = held.receipt["approval"]["id"].as_str().unwrap().to_owned();
    server.kill();
    std::thread::sleep(Duration::from_millis(12_500));
    server.restart();
    let hold = server.admin_json(&format!("/v1/approvals/{id}")).await;
    assert_eq!(hold["status"], "expired", "expired on start: {hold}");
}

fn rotate(secret: &str) -> Value {
    json!({"secret": secret})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// DEFER resolved by new context: the evidence arrives on the session, the
// deferred action is re-decided and receipted, and its retry runs.
async fn a_deferral_is_resolved_by_new_context() {
    let server = start("[deferrals]\nhold_ms = 200\n");
    let body = pre("def-1", "mcp__vault__rotate", rotate("staging/db-password"));
    let held = ask(&server, &body).await;
    assert_eq!(held.told, "deny");
    assert_eq!(held.receipt["decision"]["result"], "DEFER");
    let deferral = &held.receipt["deferral"];
    let id = deferral["id"].as_str().unwrap().to_owned();
    assert_eq!(deferral["resolution_method"], "pending");
    assert_eq!(deferral["missing"], json!(["change_freeze"]), "{deferral}");
    assert!(deferral["reason"].as_str().unwrap().contains("not known yet"));
    assert!(held.reason.contains(&id), "{}", held.reason);

    // Half the evidence: still deferred.
    let r = post(
        &server,
        "/v1/sessions/def-1/context",
        &server.admin_token,
        json!({"evidence": {"change_freeze": "clear"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["resolved"], json!([]), "{}", r.text);
    // The rest: re-decided.
    let r =
        post(&server, "/v1/sessions/def-1/context", ALICE, json!({"evidence": {"change_ticket": "approved"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let resolved = &r.json()["resolved"][0];
    assert_eq!(resolved["id"], id.as_str(), "{}", r.text);
    assert_eq!(resolved["status"], "approved");

    let receipt = follow_up(&server, "deferral", held.receipt["receipt_id"].as_str().unwrap()).await;
    assert_eq!(receipt["decision"]["result"], "ALLOW", "{receipt}");
    assert_eq!(receipt["deferral"]["resolution_method"], "context");
    assert!(receipt["deferral"]["resolved_at"].is_string());
    assert_eq!(receipt["deferral"]["resolved_by"], "alice@acme.example");
    assert_eq!(receipt["deferral"]["reason"], deferral["reason"]);
    assert_eq!(receipt["action"]["requester_context"]["human"], "ana@acme.example", "submitter kept");

    // The retry runs (the evidence is part of the session now).
    let retry = ask(&server, &body).await;
    assert_eq!(retry.told, "allow", "{}", retry.reason);
    assert_eq!(retry.receipt["decision"]["policy"]["policy_ids"], json!(["aarm.allow.secrets"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// DEFER never resolved → DENY at the deadline; the cascade of deferrals in
// one session is capped; an action on a deferred target stays deferred
// while independent ones proceed; an explicit resolution is receipted.
async fn deferrals_expire_cascade_and_depend() {
    let server = start(
        "[deferrals]\nhold_ms = 100\ndeadline_secs = 5\nmax_pending_per_session = 2\n\n\
         [integrations.claude-code-infra]\nplugin = \"claude-code\"\nsettings = { roles = \"infra-owner\" }\n",
    );
    let via = |integration: &'static str, body: Value| {
        let server = &server;
        async move {
            let r = server.hook(integration, &body).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let id = r.header("x-arbiter-receipt-id").expect("receipt id");
            server.admin_json(&format!("/v1/receipts/{id}")).await
        }
    };
    // An infra owner's infra change: ALLOW and STEP_UP conflict → DEFER.
    let main_tf = "/srv/repo/infra/main.tf";
    let first = via("claude-code-infra", pre("def-2", "Write", infra_write("resource \"x\" \"y\" {}\n"))).await;
    assert_eq!(first["decision"]["result"], "DEFER", "{first}");
    let first_id = first["deferral"]["id"].as_str().unwrap().to_owned();

    // Reading that very file depends on the deferred write; another file does not.
    let dependent = via("claude-code-infra", pre("def-2", "Read", json!({"file_path": main_tf}))).await;
    assert_eq!(dependent["decision"]["result"], "DEFER", "{dependent}");
    assert_eq!(dependent["decision"]["policy"]["policy_ids"], json!(["arbiter.deferral.dependent"]));
    assert_eq!(dependent["deferral"]["depends_on"], first_id.as_str());
    let other = via("claude-code-infra", pre("def-2", "Read", json!({"file_path": "/srv/repo/src/app.py"}))).await;
    assert_eq!(other["decision"]["result"], "ALLOW", "{other}");

    // Cascade cap 2: a second deferral is fine, a third is denied.
    let second = ask(&server, &pre("def-2", "mcp__vault__rotate", rotate("b/two"))).await;
    assert_eq!(second.receipt["decision"]["result"], "DEFER");
    let third = ask(&server, &pre("def-2", "mcp__vault__rotate", rotate("c/three"))).await;
    assert_eq!(third.receipt["decision"]["result"], "DENY", "{}", third.receipt);
    let ids = third.receipt["decision"]["policy"]["policy_ids"].as_array().unwrap().clone();
    assert!(ids.contains(&json!("arbiter.deferral.cascade")), "{ids:?}");

    // An explicit decision resolves the second one.
    let second_id = second.receipt["deferral"]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/deferrals/{second_id}/resolve");
    let r =
        post(&server, &path, &server.admin_token, json!({"decision": "DENY", "comment": "not during the audit"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["status"], "denied");
    let receipt = follow_up(&server, "deferral", second.receipt["receipt_id"].as_str().unwrap()).await;
    assert_eq!(receipt["deferral"]["resolution_method"], "api");
    assert_eq!(receipt["deferral"]["resolved_by"], "admin");
    assert_eq!(receipt["decision"]["result"], "DENY");

    // Never resolved: DENY at the deadline, with its receipt.
    let expired = eventually(&server, &format!("/v1/deferrals/{first_id}"), |v| v["status"] == "expired").await;
    assert_eq!(expired["resolution"]["decision"], "DENY");
    let receipt = follow_up(&server, "deferral", first["receipt_id"].as_str().unwrap()).await;
    assert_eq!(receipt["deferral"]["resolution_method"], "expired");
    assert_eq!(receipt["decision"]["result"], "DENY");
    assert_eq!(receipt["action"]["requester_context"]["roles"], json!(["infra-owner"]), "submitter kept");

    // Bad input is refused with a clear error.
    let r = post(&server, "/v1/sessions/def-2/context", &server.admin_token, json!({"evidence": {"x": 5}})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = post(&server, &format!("/v1/deferrals/{first_id}/resolve"), &server.admin_token, json!({})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    verify_receipts(&server.all_receipts().await, &server.keys().await).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// DEFER resolved by the pack's evidence resolver: Arbiter asks the narrow
// question itself while the hook waits, and the action proceeds; a resolver
// that is down leaves it deferred (never an ALLOW by itself).
async fn the_packs_evidence_resolver_answers_a_deferral() {
    let asked: Arc<Mutex<Vec<Value>>> = Arc::default();
    let log = asked.clone();
    let app = axum::Router::new().route(
        "/evidence",
        axum::routing::post(move |axum::Json(q): axum::Json<Value>| {
            let log = log.clone();
            async move {
                let value = match q["question"].as_str() {
                    Some("change_freeze") => "clear",
                    Some("change_ticket") => "approved",
                    _ => "unknown",
                };
                log.lock().unwrap().push(q);
                axum::Json(json!({"value": value}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    common::copy_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance"), &pack);
    let mut manifest = std::fs::read_to_string(pack.join("pack.toml")).unwrap();
    for name in ["change_freeze", "change_ticket"] {
        manifest.push_str(&format!("\n[evidence.{name}]\nurl = \"http://{addr}/evidence\"\ntimeout_ms = 1000\n"));
    }
    std::fs::write(pack.join("pack.toml"), manifest).unwrap();
    let cfg = config("[deferrals]\nhold_ms = 3000\n").replace(
        &format!("{}", std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance").display()),
        &pack.display().to_string(),
    );
    let server = Server::start_with(ServerOptions { config: Some(cfg), ..ServerOptions::default() });

    let answer = ask(&server, &pre("def-resolver", "mcp__vault__rotate", rotate("prod/api-key"))).await;
    assert_eq!(answer.told, "allow", "{}", answer.reason);
    assert_eq!(answer.receipt["decision"]["result"], "ALLOW", "{}", answer.receipt);
    assert_eq!(answer.receipt["deferral"]["resolution_method"], "resolver", "{}", answer.receipt);
    let questions = asked.lock().unwrap().clone();
    let q = questions.iter().find(|q| q["question"] == "change_freeze").expect("asked about the freeze");
    assert_eq!(q["action"]["tool"], "secrets");
    assert_eq!(q["action"]["target"], "prod/api-key");
    assert!(q["deferral_id"].as_str().unwrap().starts_with("def-"));

    // The deferral's own follow-up receipt names the resolver.
    let deferrals = server.admin_json("/v1/deferrals").await;
    let hold = &deferrals["deferrals"][0];
    assert_eq!(hold["status"], "approved", "{deferrals}");
    assert_eq!(hold["resolution"]["method"], "resolver");
    assert_eq!(hold["resolution"]["by"], "evidence-resolver");

    // A resolver that is down: the action stays deferred.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let manifest =
        std::fs::read_to_string(pack.join("pack.toml")).unwrap().replace(&addr.to_string(), &closed.to_string());
    std::fs::write(pack.join("pack.toml"), manifest).unwrap();
    drop(server);
    let cfg = config("[deferrals]\nhold_ms = 1500\n").replace(
        &format!("{}", std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance").display()),
        &pack.display().to_string(),
    );
    let server = Server::start_with(ServerOptions { config: Some(cfg), ..ServerOptions::default() });
    let answer = ask(&server, &pre("def-resolver-down", "mcp__vault__rotate", rotate("prod/api-key"))).await;
    assert_eq!((answer.told.as_str(), answer.receipt["decision"]["result"].as_str()), ("deny", Some("DEFER")));
    let deferrals = server.admin_json("/v1/deferrals?status=pending").await;
    assert_eq!(deferrals["deferrals"].as_array().unwrap().len(), 1, "{deferrals}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// SDK callers (`/v1/evaluate`) get the approval id with a STEP_UP; once it
// is approved the identical action evaluates to ALLOW, up to the uses the
// policy grants.
async fn evaluate_callers_get_an_approval_to_wait_for() {
    let server = start("");
    let action = json!({
        "tool": "file", "operation": "write", "resource": "/srv/repo/infra/dns.tf",
        "parameters": {"file_path": "/srv/repo/infra/dns.tf", "content": "record {}"},
        "requester_context": {"session": "sdk-1", "agent": "deploy-bot", "human": "ana@acme.example"}
    });
    let evaluate = || async {
        let r = post(&server, "/v1/evaluate", &server.ingress_token, action.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()
    };
    let first = evaluate().await;
    assert_eq!(first["decision"], "STEP_UP", "{first}");
    let id = first["approval_id"].as_str().expect("approval id").to_owned();
    let hold = get_as(&server, &format!("/v1/approvals/{id}"), ALICE).await;
    assert_eq!(hold["action"]["requester_context"]["agent"], "deploy-bot");
    let r = post(&server, &format!("/v1/approvals/{id}/approve"), ALICE, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let second = evaluate().await;
    assert_eq!(second["decision"], "ALLOW", "{second}");
    assert!(second.get("approval_id").is_none());
    let third = evaluate().await;
    assert_eq!(third["decision"], "STEP_UP", "one use: {third}");
    assert_ne!(third["approval_id"], id.as_str());
}
