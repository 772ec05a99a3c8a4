//! Multi-tenant isolation, black-box against the real binary: two tenants,
//! each with its own integration, policy pack and credentials.
//! - the same payload gets each tenant's own decision, and a tenant admin's
//!   `PUT /v1/policies` changes only that tenant's;
//! - the same vendor session id in two tenants is two sessions;
//! - every route of `arbiter::api::routes` that names a receipt, session,
//!   approval, deferral, pack or token answers another tenant's id with 404
//!   (as for an id that does not exist), for that tenant's auditor, approver
//!   and admin alike; lists show nothing of the other tenant; nothing of the
//!   other tenant changes;
//! - a default-only config behaves as before.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::path::Path;

use arbiter::auth::Role;
use axum::http::Method;
use common::{Server, ServerOptions, fixture, verify_receipts};
use serde_json::{Value, json};

const BETA_APPROVER: &str = "beta-bootstrap-approver-0001";

/// acme: the conformance pack (STEP_UP on infra writes, DEFER on secret
/// rotation), its integration `acme-cc`. beta: a pack that allows all but
/// deploys, its integration `beta-cc`, a bootstrap approver of its own.
fn config(root: &Path) -> String {
    let conformance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance");
    let beta_pack = root.join("beta-pack");
    common::write_forbid_pack(
        &beta_pack,
        "beta-pack",
        "shell.exec",
        "command",
        "deploy",
        "beta.no-deploy",
        "beta forbids deploys from agents",
    );
    format!(
        r#"
[approvals]
hold_ms = 100

[deferrals]
hold_ms = 100

[integrations.acme-cc]
plugin = "claude-code"
step_up = "hold"

[integrations.beta-cc]
plugin = "claude-code"
step_up = "hold"

[tenants.acme]
name = "Acme Corp"
integrations = ["acme-cc"]
policies = "{}"

[tenants.beta]
integrations = ["beta-cc"]
policies = "{}"

[auth.approvers."bea@beta.example"]
token = "{BETA_APPROVER}"
tenant = "beta"
"#,
        conformance.display(),
        beta_pack.display()
    )
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let server = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() });
    // The packs are read at start; the directory may go.
    drop(dir);
    server
}

fn pre(session: &str, tool: &str, input: Value) -> Value {
    let mut v = fixture("PreToolUse.json");
    v["session_id"] = json!(session);
    v["tool_name"] = json!(tool);
    v["tool_input"] = input;
    v
}

fn infra_write() -> Value {
    json!({"file_path": "/srv/repo/infra/main.tf", "content": "resource \"aws_s3_bucket\" \"logs\" {}\n"})
}

/// Send a hook as `token`; the receipt it produced, read as the bootstrap
/// admin (deployment-wide).
async fn hook(server: &Server, integration: &str, token: &str, body: &Value) -> Value {
    let r = server.post_raw(&format!("/v1/hooks/{integration}"), Some(token), serde_json::to_vec(body).unwrap()).await;
    assert_eq!(r.status, 200, "{integration}: {}", r.text);
    let id = r.header("x-arbiter-receipt-id").expect("receipt id");
    server.admin_json(&format!("/v1/receipts/{id}")).await
}

/// `POST /v1/tokens` with `admin`; returns (id, secret).
async fn token(server: &Server, admin: &str, body: Value) -> (String, String) {
    let r = server.post_raw("/v1/tokens", Some(admin), serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status, 201, "{body}: {}", r.text);
    let v = r.json();
    (v["id"].as_str().unwrap().to_owned(), v["token"].as_str().unwrap().to_owned())
}

async fn call(server: &Server, method: &Method, path: &str, token: &str, body: &str) -> common::Reply {
    let mut req = server.http.request(method.clone(), server.url(path)).bearer_auth(token);
    if method != Method::GET && method != Method::DELETE {
        req = req.header("content-type", "application/json").body(body.to_owned());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    common::Reply { status, headers, text: resp.text().await.unwrap() }
}

/// A pack directory as `PUT /v1/policies` takes it: relative path → content.
fn pack_upload(dir: &Path) -> Value {
    fn walk(root: &Path, dir: &Path, files: &mut serde_json::Map<String, Value>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, files);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                files.insert(rel, Value::from(std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut files = serde_json::Map::new();
    walk(dir, dir, &mut files);
    json!({"files": files})
}

/// What acme owns that beta must never reach.
struct Acme {
    receipt: String,
    session: String,
    approval: String,
    deferral: String,
    pack_hash: String,
    token_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Two tenants: own decisions for the same payload, own sessions for the same
// session id, own packs; each of beta's credentials gets 404 for every one of
// acme's resources on every route that names one, and lists show none.
async fn tenants_decide_apart_and_cannot_reach_each_other() {
    let server = start();
    let root = server.root().to_owned();
    let ingress = server.ingress_token.clone();

    // Tenant admins made by the deployment-wide admin; each makes its own
    // tenant's tokens (its tenant by default, no other).
    let (_, acme_admin) = token(&server, &server.admin_token, json!({"role": "admin", "tenant": "acme"})).await;
    let (_, beta_admin) = token(&server, &server.admin_token, json!({"role": "admin", "tenant": "beta"})).await;
    let (acme_ingress_id, acme_ingress) = token(&server, &acme_admin, json!({"role": "ingress"})).await;
    let (_, beta_ingress) = token(&server, &beta_admin, json!({"role": "ingress"})).await;
    let (_, beta_auditor) = token(&server, &beta_admin, json!({"role": "auditor"})).await;
    let (_, beta_approver) = token(&server, &beta_admin, json!({"role": "approver"})).await;
    let r = server
        .post_raw(
            "/v1/tokens",
            Some(&beta_admin),
            serde_json::to_vec(&json!({"role": "admin", "tenant": "acme"})).unwrap(),
        )
        .await;
    assert_eq!(r.status, 404, "a tenant admin cannot mint another tenant's token: {}", r.text);
    let r = server
        .post_raw(
            "/v1/tokens",
            Some(&server.admin_token),
            serde_json::to_vec(&json!({"role": "admin", "tenant": "nope"})).unwrap(),
        )
        .await;
    assert_eq!(r.status, 404, "no such tenant: {}", r.text);

    // The same payloads, each tenant's own decision.
    let deploy = pre("shared-1", "Bash", json!({"command": "./deploy.sh prod"}));
    let acme_deploy = hook(&server, "acme-cc", &acme_ingress, &deploy).await;
    let beta_deploy = hook(&server, "beta-cc", &beta_ingress, &deploy).await;
    assert_ne!(acme_deploy["decision"]["result"], "DENY", "{acme_deploy}");
    assert_eq!(beta_deploy["decision"]["result"], "DENY", "{beta_deploy}");
    assert_eq!(beta_deploy["decision"]["policy"]["policy_ids"], json!(["beta.no-deploy"]));
    let infra = pre("shared-1", "Write", infra_write());
    let acme_infra = hook(&server, "acme-cc", &acme_ingress, &infra).await;
    let beta_infra = hook(&server, "beta-cc", &beta_ingress, &infra).await;
    assert_eq!(acme_infra["decision"]["result"], "STEP_UP", "{acme_infra}");
    assert_eq!(beta_infra["decision"]["result"], "ALLOW", "{beta_infra}");
    // Receipts name their tenant (signed); the tenant is the integration's.
    for (r, tenant) in [(&acme_deploy, "acme"), (&acme_infra, "acme"), (&beta_deploy, "beta"), (&beta_infra, "beta")] {
        assert_eq!(r["tenant"], tenant, "{r}");
        assert_eq!(r["vendor"]["integration"], format!("{tenant}-cc"));
    }
    let acme_rotate = hook(
        &server,
        "acme-cc",
        &acme_ingress,
        &pre("shared-1", "mcp__vault__rotate", json!({"secret": "staging/db-password"})),
    )
    .await;
    assert_eq!(acme_rotate["decision"]["result"], "DEFER", "{acme_rotate}");

    // The same session id is two sessions.
    assert_eq!(acme_deploy["action"]["requester_context"]["session"], "acme:shared-1");
    assert_eq!(beta_deploy["action"]["requester_context"]["session"], "beta:shared-1");
    let acme_session = server.admin_json("/v1/sessions/acme:shared-1").await;
    let beta_session = server.admin_json("/v1/sessions/beta:shared-1").await;
    assert_eq!(acme_session["summary"]["actions"], 3, "{acme_session}");
    assert_eq!(beta_session["summary"]["actions"], 2, "{beta_session}");
    assert_eq!(server.get("/v1/sessions/shared-1", Some(&server.admin_token)).await.status, 404);

    // A tenant's ingress credential reaches its own integrations only; the
    // deployment-wide one reaches all, and the tenant is still the integration's.
    let body = serde_json::to_vec(&deploy).unwrap();
    let r = server.post_raw("/v1/hooks/acme-cc", Some(&beta_ingress), body.clone()).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = server.post_raw("/v1/hooks/claude-code", Some(&beta_ingress), body.clone()).await;
    assert_eq!(r.status, 404, "the default tenant's integration: {}", r.text);
    let via_bootstrap = hook(&server, "beta-cc", &ingress, &deploy).await;
    assert_eq!(via_bootstrap["tenant"], "beta");
    // `/v1/evaluate` decides in the caller's tenant.
    let action = json!({"tool": "shell", "operation": "exec", "parameters": {"command": "./deploy.sh prod"},
                        "requester_context": {"session": "eval-1"}});
    let r = server.post_raw("/v1/evaluate", Some(&beta_ingress), serde_json::to_vec(&action).unwrap()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["decision"], "DENY", "beta's pack: {}", r.text);
    let eval = server.admin_json(&format!("/v1/receipts/{}", r.json()["receipt_id"].as_str().unwrap())).await;
    assert_eq!(
        (eval["tenant"].as_str(), eval["action"]["requester_context"]["session"].as_str()),
        (Some("beta"), Some("beta:eval-1"))
    );

    // A tenant admin replaces its own pack only: beta now forbids infra too.
    let upload_dir = root.join("beta-upload");
    common::write_forbid_pack(&upload_dir, "beta-v2", "file.write", "content", "aws_", "beta.no-infra", "no infra");
    let r = server.put_json("/v1/policies", Some(&beta_admin), &pack_upload(&upload_dir)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["tenant"], "beta");
    let r = server.put_json("/v1/policies?tenant=acme", Some(&beta_admin), &pack_upload(&upload_dir)).await;
    assert_eq!(r.status, 404, "a tenant admin cannot name another tenant: {}", r.text);
    let infra2 = pre("shared-2", "Write", infra_write());
    let beta_after = hook(&server, "beta-cc", &beta_ingress, &infra2).await;
    let acme_after = hook(&server, "acme-cc", &acme_ingress, &infra2).await;
    assert_eq!(beta_after["decision"]["policy"]["policy_ids"], json!(["beta.no-infra"]), "{beta_after}");
    assert_eq!(acme_after["decision"]["result"], "STEP_UP", "acme's pack is untouched: {acme_after}");
    // acme uploads its own pack too (the conformance pack), so it has a
    // stored pack for beta to reach for.
    let acme_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance");
    let upload = pack_upload(&acme_dir);
    let r = server.put_json("/v1/policies", Some(&acme_admin), &upload).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let acme_pack_hash = r.json()["active"]["hash"].as_str().unwrap().to_owned();

    let acme = Acme {
        receipt: acme_infra["receipt_id"].as_str().unwrap().to_owned(),
        session: "acme:shared-1".to_owned(),
        approval: acme_infra["approval"]["id"].as_str().unwrap().to_owned(),
        deferral: acme_rotate["deferral"]["id"].as_str().unwrap().to_owned(),
        pack_hash: acme_pack_hash,
        token_id: acme_ingress_id,
    };
    // acme's own admin reaches every one of them.
    for path in [
        format!("/v1/receipts/{}", acme.receipt),
        format!("/v1/sessions/{}", acme.session),
        format!("/v1/sessions/{}/verify", acme.session),
        format!("/v1/approvals/{}", acme.approval),
        format!("/v1/deferrals/{}", acme.deferral),
        format!("/v1/policies/{}", acme.pack_hash),
    ] {
        let r = server.get(&path, Some(&acme_admin)).await;
        assert_eq!(r.status, 200, "acme's admin reads {path}: {}", r.text);
    }

    // Every route that names a resource, with beta's credentials of every
    // role that may call it: 404, the same answer as for an unknown id.
    let secrets = [
        acme.receipt.as_str(),
        acme.approval.as_str(),
        acme.deferral.as_str(),
        acme.token_id.as_str(),
        acme.pack_hash.as_str(),
        "acme:",
    ];
    let beta_credentials = [
        ("beta admin", Role::Admin, beta_admin.as_str()),
        ("beta auditor", Role::Auditor, beta_auditor.as_str()),
        ("beta approver (token)", Role::Approver, beta_approver.as_str()),
        ("beta approver (bootstrap)", Role::Approver, BETA_APPROVER),
    ];
    let mut by_id = 0;
    let mut lists = 0;
    let mut plugin_routes = 0;
    let plugin = "claude-code".to_owned();
    for route in arbiter::api::routes(1024 * 1024) {
        let Some(required) = route.role else { continue };
        if required == Role::Ingress {
            continue;
        }
        let what = format!("{} {}", route.method, route.path);
        let params: Vec<&str> =
            route.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let path = params.iter().fold(route.path.to_owned(), |path, param| {
            let value = match (*param, route.path) {
                ("receipt_id", _) => &acme.receipt,
                ("session_id", _) => &acme.session,
                ("id", p) if p.starts_with("/v1/approvals/") => &acme.approval,
                ("id", p) if p.starts_with("/v1/deferrals/") => &acme.deferral,
                ("id", p) if p.starts_with("/v1/tokens/") => &acme.token_id,
                ("hash", p) if p.starts_with("/v1/policies/") => &acme.pack_hash,
                // Plugins are the deployment's, not a tenant's (below).
                ("name", p) if p.starts_with("/v1/plugins/") => &plugin,
                _ => panic!("{what}: this test does not know which tenant's resource `{{{param}}}` names; add it"),
            };
            path.replace(&format!("{{{param}}}"), value)
        });
        let body = match route.path {
            "/v1/sessions/{session_id}/context" => r#"{"evidence": {"change_freeze": "clear"}}"#,
            "/v1/deferrals/{id}/resolve" => r#"{"decision": "ALLOW"}"#,
            _ => "{}",
        };
        for (name, held, credential) in &beta_credentials {
            if !held.grants(required) {
                continue;
            }
            let r = call(&server, &route.method, &path, credential, body).await;
            if route.path.starts_with("/v1/log/") {
                // The deployment's one log: hashes and signed checkpoints,
                // which name no receipt, session or tenant.
                assert!(![401, 403].contains(&r.status), "{what} as {name}: {}", r.text);
                for s in secrets {
                    assert!(!r.text.contains(s), "{what} as {name} shows acme's `{s}`: {}", r.text);
                }
            } else if route.path.starts_with("/v1/plugins") {
                // Shared by every tenant: a tenant's admin may not touch them.
                assert_eq!(r.status, 403, "{what} as {name}: {}", r.text);
                assert_eq!(r.json()["error"]["code"], "forbidden");
                plugin_routes += 1;
            } else if params.is_empty() {
                // Lists and tenant-wide routes: never another tenant's.
                if route.method == Method::GET {
                    assert_eq!(r.status, 200, "{what} as {name}: {}", r.text);
                    for s in secrets {
                        assert!(!r.text.contains(s), "{what} as {name} shows acme's `{s}`: {}", r.text);
                    }
                    lists += 1;
                }
            } else {
                assert_eq!(r.status, 404, "{what} as {name}: {}", r.text);
                assert_eq!(r.json()["error"]["code"], "not_found");
                by_id += 1;
            }
        }
        // Naming acme outright is refused as well.
        if route.method == Method::GET
            && ["/v1/receipts", "/v1/approvals", "/v1/deferrals", "/v1/policies", "/v1/tokens"].contains(&route.path)
        {
            let r = call(&server, &route.method, &format!("{path}?tenant=acme"), &beta_admin, body).await;
            assert_eq!(r.status, 404, "{what}?tenant=acme as beta admin: {}", r.text);
        }
    }
    assert!(by_id >= 20 && lists >= 10, "routes checked: {by_id} by id, {lists} lists");
    assert_eq!(plugin_routes, 5, "the plugin routes, as beta's admin");
    let r = server.get("/v1/plugins/claude-code", Some(&server.admin_token)).await;
    assert_eq!(r.status, 200, "the deployment-wide admin manages plugins: {}", r.text);

    // Nothing of acme's changed: its approval and deferral are still
    // pending, its token works, its session took no evidence.
    let approval = server.admin_json(&format!("/v1/approvals/{}", acme.approval)).await;
    assert_eq!(approval["status"], "pending", "{approval}");
    let deferral = server.admin_json(&format!("/v1/deferrals/{}", acme.deferral)).await;
    assert_eq!(deferral["status"], "pending", "{deferral}");
    assert_eq!(server.get("/v1/receipts", Some(&acme_ingress)).await.status, 403, "ingress, not revoked: 403 not 401");
    let session = server.admin_json(&format!("/v1/sessions/{}", acme.session)).await;
    assert!(!session.to_string().contains("change_freeze\":\"clear"), "{session}");

    // Each tenant's auditor sees its own receipts only; the deployment-wide
    // admin sees both, and they verify as one signed chain.
    let (_, acme_auditor) = token(&server, &acme_admin, json!({"role": "auditor"})).await;
    for (auditor, tenant) in [(&acme_auditor, "acme"), (&beta_auditor, "beta")] {
        let r = server.get("/v1/receipts?limit=1000", Some(auditor)).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let receipts = r.json()["receipts"].as_array().unwrap().clone();
        assert!(!receipts.is_empty());
        assert!(receipts.iter().all(|r| r["tenant"] == tenant), "{tenant}: {receipts:?}");
    }
    let all = server.all_receipts().await;
    let tenants: std::collections::BTreeSet<&str> = all.iter().filter_map(|r| r["tenant"].as_str()).collect();
    assert_eq!(tenants, ["acme", "beta"].into_iter().collect());
    verify_receipts(&all, &server.keys().await).unwrap();

    // An approver of acme may resolve acme's approval (the one beta could not).
    let r =
        server.post_raw(&format!("/v1/approvals/{}/approve", acme.approval), Some(&acme_admin), b"{}".to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Without tenants nothing changes: sessions are stored as sent, receipts say
// `default`, tokens made without a tenant see everything there is.
async fn a_default_only_config_behaves_as_before() {
    let server = Server::start();
    let r = hook(&server, "claude-code", &server.ingress_token, &common::pre_tool_use_bash("ls", "plain-1")).await;
    assert_eq!(r["tenant"], "default");
    assert_eq!(r["action"]["requester_context"]["session"], "plain-1");
    let (_, auditor) = token(&server, &server.admin_token, json!({"role": "auditor"})).await;
    let s = server.get("/v1/sessions/plain-1", Some(&auditor)).await;
    assert_eq!(s.status, 200, "{}", s.text);
    let id = r["receipt_id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/v1/receipts/{id}"), Some(&auditor)).await.status, 200);
    let tokens = server.admin_json("/v1/tokens").await;
    assert_eq!(tokens["tokens"][0]["tenant"], "default", "{tokens}");
    let policies = server.admin_json("/v1/policies").await;
    assert_eq!(policies["tenant"], "default");
    let r = server.get("/v1/receipts?tenant=acme", Some(&server.admin_token)).await;
    assert_eq!(r.status, 404, "no such tenant: {}", r.text);
}

const ISSUER: &str = "https://idp.acme.example/realms/arbiter";
const AUDIENCE: &str = "arbiter-api";

fn sso_token(org: Option<&str>) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "audit-1", "iat": t, "exp": t + 600,
                            "roles": ["arbiter-auditor"]});
    if let Some(org) = org {
        claims["org"] = json!(org);
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test-kid-1".to_owned());
    let pem =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/entra/tenant-key.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// SSO: the tenant claim scopes an OIDC caller; a token naming no tenant of
// this deployment, or none, is refused.
async fn oidc_callers_act_in_the_tenant_their_claim_names() {
    let jwks: Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/entra/jwks.json")).unwrap(),
    )
    .unwrap();
    let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n[auth.oidc]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\njwks_url = \"{jwks_url}\"\n\
         tenant_claim = \"org\"\nroles = {{ \"arbiter-auditor\" = \"auditor\" }}\n",
        config(dir.path())
    );
    let server = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() });
    let ingress = server.ingress_token.clone();
    let acme = hook(&server, "acme-cc", &ingress, &common::pre_tool_use_bash("ls", "sso-1")).await;
    let beta = hook(&server, "beta-cc", &ingress, &common::pre_tool_use_bash("ls", "sso-1")).await;

    let beta_auditor = sso_token(Some("beta"));
    let r = server.get(&format!("/v1/receipts/{}", beta["receipt_id"].as_str().unwrap()), Some(&beta_auditor)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = server.get(&format!("/v1/receipts/{}", acme["receipt_id"].as_str().unwrap()), Some(&beta_auditor)).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = server.get("/v1/receipts", Some(&beta_auditor)).await;
    let listed = r.json()["receipts"].as_array().unwrap().clone();
    assert!(!listed.is_empty() && listed.iter().all(|r| r["tenant"] == "beta"), "{}", r.text);
    for (what, token) in [("unknown tenant", sso_token(Some("gamma"))), ("no tenant claim", sso_token(None))] {
        let r = server.get("/v1/keys", Some(&token)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// A tenant's uploaded pack stays in force for that tenant across a restart;
// once a tenant is removed from config, its credentials act nowhere (401).
async fn tenant_packs_survive_restarts_and_removed_tenants_lose_access() {
    let dir = tempfile::tempdir().unwrap();
    let original = config(dir.path());
    let mut server = Server::start_with(ServerOptions { config: Some(original.clone()), ..ServerOptions::default() });
    let (_, beta_admin) = token(&server, &server.admin_token, json!({"role": "admin", "tenant": "beta"})).await;
    let upload_dir = dir.path().join("beta-upload");
    common::write_forbid_pack(&upload_dir, "beta-v2", "file.write", "content", "aws_", "beta.no-infra", "no infra");
    let r = server.put_json("/v1/policies", Some(&beta_admin), &pack_upload(&upload_dir)).await;
    assert_eq!(r.status, 200, "{}", r.text);

    server.restart();
    let ingress = server.ingress_token.clone();
    let infra = pre("restart-1", "Write", infra_write());
    let beta = hook(&server, "beta-cc", &ingress, &infra).await;
    let acme = hook(&server, "acme-cc", &ingress, &infra).await;
    assert_eq!(beta["decision"]["policy"]["policy_ids"], json!(["beta.no-infra"]), "{beta}");
    assert_eq!(acme["decision"]["result"], "STEP_UP", "{acme}");
    let policies = server.get("/v1/policies", Some(&beta_admin)).await.json();
    assert_eq!((policies["tenant"].as_str(), policies["active_is_uploaded"].as_bool()), (Some("beta"), Some(true)));
    let policies = server.admin_json("/v1/policies?tenant=acme").await;
    assert_eq!(policies["active_is_uploaded"], false, "{policies}");

    // The CLI makes a tenant's token (with the deployment-wide admin token).
    let out = std::process::Command::new(common::ARBITER)
        .args(["token", "create", "--role", "auditor", "--name", "beta-soc", "--tenant", "beta", "--url", &server.base])
        .arg("--data-dir")
        .arg(&server.data_dir)
        .env_remove("ARBITER_TOKEN")
        .env_remove("ARBITER_TOKEN_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("tenant beta"), "{stderr}");
    let cli_auditor = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let r = server.get(&format!("/v1/receipts/{}", beta["receipt_id"].as_str().unwrap()), Some(&cli_auditor)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = server.get(&format!("/v1/receipts/{}", acme["receipt_id"].as_str().unwrap()), Some(&cli_auditor)).await;
    assert_eq!(r.status, 404, "{}", r.text);

    // beta goes away: its integration falls to `default`, its admin to nothing.
    let start = original.find("[tenants.beta]").unwrap();
    let end = original.find("[auth.approvers").unwrap();
    let without_beta = format!("{}{}", &original[..start], &original[end..]).replace("tenant = \"beta\"\n", "");
    std::fs::write(server.root().join("arbiter.toml"), without_beta).unwrap();
    server.restart();
    let r = server.get("/v1/receipts", Some(&beta_admin)).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let moved = hook(&server, "beta-cc", &server.ingress_token, &infra).await;
    assert_eq!(moved["tenant"], "default", "{moved}");
}
