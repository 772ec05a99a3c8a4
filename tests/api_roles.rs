//! Roles of the HTTP API, black-box against the real binary:
//! - every route of `arbiter::api::routes` (the table the router is built
//!   from, so a new route cannot be left out) refuses a request without
//!   credentials (401) and one whose credential has a weaker role (403);
//! - `arbiter token create|list|revoke` against the running server: the
//!   secret is printed once, only its hash is stored, a revoked or expired
//!   token gets 401 at once, and tokens survive a restart;
//! - OIDC bearer JWTs (a test key, a JWKS on loopback): claims map to roles,
//!   and an approver's identity claim is recorded as the resolver.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use arbiter::auth::Role;
use common::{ARBITER, Server, ServerOptions, fixture};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const APPROVER: &str = "bootstrap-approver-token-0001";

/// A concrete path for a route pattern.
fn concrete(pattern: &str) -> String {
    pattern.replace("{integration}", "claude-code").replace("{event}", "ev").replace(['{', '}'], "")
}

async fn call(server: &Server, method: &axum::http::Method, path: &str, token: Option<&str>) -> common::Reply {
    let mut req = server.http.request(method.clone(), server.url(path)).header("content-type", "application/json");
    if method != axum::http::Method::GET && method != axum::http::Method::DELETE {
        req = req.body("{}");
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    common::Reply { status, headers, text }
}

/// `POST /v1/tokens` as admin; returns the secret.
async fn api_token(server: &Server, body: Value) -> String {
    let r = server.post_raw("/v1/tokens", Some(&server.admin_token), serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Each route: no credential → 401, a garbage one → 401, each credential of a
// role that does not grant the route's → 403, one that does → neither.
async fn every_route_refuses_missing_and_insufficient_credentials() {
    let config = format!("[auth.approvers.\"alice@acme.example\"]\ntoken = \"{APPROVER}\"\ngroups = [\"ops\"]\n");
    let server = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() });
    // One credential per role, bootstrap and API token alike.
    let mut credentials: Vec<(String, Role, String)> = vec![
        ("bootstrap admin".to_owned(), Role::Admin, server.admin_token.clone()),
        ("bootstrap ingress".to_owned(), Role::Ingress, server.ingress_token.clone()),
        ("bootstrap approver".to_owned(), Role::Approver, APPROVER.to_owned()),
    ];
    for role in Role::ALL {
        let groups = if role == Role::Approver { json!(["ops"]) } else { json!([]) };
        let token =
            api_token(&server, json!({"role": role, "name": format!("t-{}", role.as_str()), "groups": groups})).await;
        credentials.push((format!("api {}", role.as_str()), role, token));
    }

    let routes = arbiter::api::routes(1024 * 1024);
    let public: Vec<&str> = routes.iter().filter(|r| r.role.is_none()).map(|r| r.path).collect();
    assert_eq!(public, ["/healthz", "/readyz"], "only the probes are public");
    assert!(routes.len() >= 25, "the table holds every route ({})", routes.len());
    let mut checked = 0;
    for route in &routes {
        let path = concrete(route.path);
        let what = format!("{} {}", route.method, route.path);
        let Some(required) = route.role else {
            assert_eq!(call(&server, &route.method, &path, None).await.status, 200, "{what}");
            continue;
        };
        let r = call(&server, &route.method, &path, None).await;
        assert_eq!(r.status, 401, "{what} without credentials: {}", r.text);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"), "{what}");
        let r = call(&server, &route.method, &path, Some("arb_000000000000_not-a-real-secret")).await;
        assert_eq!(r.status, 401, "{what} with an unknown token: {}", r.text);
        for (name, held, token) in &credentials {
            let r = call(&server, &route.method, &path, Some(token)).await;
            if held.grants(required) {
                assert!(![401, 403].contains(&r.status), "{what} refused {name} ({}): {}", r.status, r.text);
            } else {
                assert_eq!(r.status, 403, "{what} with {name}: {}", r.text);
                assert!(r.text.contains(required.as_str()), "{what}: the refusal names the role: {}", r.text);
            }
        }
        checked += 1;
    }
    assert_eq!(checked, routes.len() - 2);
}

fn arbiter_token(server: &Server, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ARBITER)
        .arg("token")
        .args(args)
        .arg("--url")
        .arg(&server.base)
        .arg("--data-dir")
        .arg(&server.data_dir)
        .env_remove("ARBITER_TOKEN")
        .env_remove("ARBITER_TOKEN_FILE")
        .output()
        .expect("running arbiter token");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// `arbiter token create` prints the secret once and the running server takes
// it at once; `list` shows no secret; `revoke` refuses it from the next
// request; an expired token is refused; all of it survives a restart.
async fn api_tokens_are_created_listed_and_revoked_through_the_cli() {
    let mut server = Server::start();
    let (ok, stdout, stderr) = arbiter_token(&server, &["create", "--role", "auditor", "--name", "ci-audit"]);
    assert!(ok, "{stderr}");
    let secret = stdout.trim().to_owned();
    assert!(secret.starts_with("arb_") && secret.len() > 50, "{stdout}");
    let id = secret.split('_').nth(1).unwrap().to_owned();
    assert!(stderr.contains(&id) && stderr.contains("auditor"), "{stderr}");

    // The auditor reads receipts but manages nothing.
    assert_eq!(server.get("/v1/receipts", Some(&secret)).await.status, 200);
    assert_eq!(server.get("/v1/keys", Some(&secret)).await.status, 200);
    assert_eq!(server.get("/v1/policies", Some(&secret)).await.status, 403);
    assert_eq!(server.get("/v1/approvals", Some(&secret)).await.status, 403);

    // Listed with its details and last use, never its secret or hash.
    let (ok, table, _) = arbiter_token(&server, &["list"]);
    assert!(ok);
    assert!(table.contains(&id) && table.contains("ci-audit") && table.contains("active"), "{table}");
    let (ok, listed, _) = arbiter_token(&server, &["list", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let entry = listed["tokens"].as_array().unwrap().iter().find(|t| t["id"] == id.as_str()).unwrap().clone();
    assert_eq!((entry["role"].as_str(), entry["state"].as_str()), (Some("auditor"), Some("active")), "{entry}");
    assert!(entry["last_used"].is_string(), "{entry}");
    let text = listed.to_string();
    assert!(!text.contains(&secret[17..]) && !text.contains("sha256"), "no secret and no digest: {text}");

    // An ingress token made the same way governs hooks.
    let (ok, ingress, _) = arbiter_token(&server, &["create", "--role", "ingress", "--name", "platform-b"]);
    assert!(ok);
    let body = serde_json::to_vec(&common::pre_tool_use_bash("ls", "token-session")).unwrap();
    let r = server.post_raw("/v1/hooks/claude-code", Some(ingress.trim()), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-arbiter-decision").as_deref(), Some("ALLOW"));

    // An expired token is refused.
    let (ok, short, stderr) = arbiter_token(&server, &["create", "--role", "auditor", "--expires", "2s"]);
    assert!(ok, "{stderr}");
    assert_eq!(server.get("/v1/keys", Some(short.trim())).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(server.get("/v1/keys", Some(short.trim())).await.status, 401, "expired");

    // Bad input is refused with a reason.
    let (ok, _, stderr) = arbiter_token(&server, &["create", "--role", "root"]);
    assert!(!ok && stderr.contains("400"), "{stderr}");
    let (ok, _, stderr) = arbiter_token(&server, &["create", "--role", "auditor", "--groups", "ops"]);
    assert!(!ok && stderr.contains("only approver tokens have groups"), "{stderr}");

    // Revoked: refused from the next request.
    let (ok, out, stderr) = arbiter_token(&server, &["revoke", &id]);
    assert!(ok && out.contains("revoked"), "{stderr}");
    let r = server.get("/v1/receipts", Some(&secret)).await;
    assert_eq!(r.status, 401, "a revoked token is refused: {}", r.text);
    let (ok, _, stderr) = arbiter_token(&server, &["revoke", "ffffffffffff"]);
    assert!(!ok && stderr.contains("404"), "{stderr}");

    // After a restart: the live token works, the revoked one does not.
    server.restart();
    assert_eq!(server.get("/v1/receipts", Some(&secret)).await.status, 401);
    let r = server.post_raw("/v1/evaluate", Some(ingress.trim()), b"{}".to_vec()).await;
    assert_eq!(r.status, 400, "authenticated, then refused as a bad action: {}", r.text);
    let (_, table, _) = arbiter_token(&server, &["list"]);
    assert!(table.contains(&id) && table.contains("revoked"), "{table}");

    // The CLI needs an admin credential: an ingress token is refused.
    let out = Command::new(ARBITER)
        .args(["token", "list", "--url", &server.base])
        .env("ARBITER_TOKEN", ingress.trim())
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("403"));
}

const ISSUER: &str = "https://idp.test.example/";
const AUDIENCE: &str = "arbiter-api";

fn entra_fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/entra").join(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn jwt(claims: Value, key: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-kid-1".to_owned());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(&entra_fixture(key)).unwrap()).unwrap()
}

fn person(email: &str, roles: Value, groups: Value) -> Value {
    let t = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": format!("sub-{email}"), "email": email, "iat": t, "exp": t + 600,
           "realm_access": {"roles": roles}, "groups": groups})
}

async fn jwks_server() -> String {
    let jwks: Value = serde_json::from_slice(&entra_fixture("jwks.json")).unwrap();
    let app = axum::Router::new().route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// OIDC: a verified JWT's role claim maps to roles (unmapped → 403); forged,
// expired, wrong-audience and wrong-issuer tokens get 401; an approver's
// identity claim is the resolver recorded for the approval.
async fn oidc_jwts_map_claims_to_roles_and_identity() {
    let jwks = jwks_server().await;
    let pack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/aarm-conformance");
    let config = format!(
        r#"policies = "{}"

[integrations.claude-code]
plugin = "claude-code"
step_up = "hold"

[approvals]
hold_ms = 0

[auth.oidc]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_url = "{jwks}"
identity_claim = "email"
role_claim = "realm_access.roles"
groups_claim = "groups"
roles = {{ "arbiter-admin" = "admin", "arbiter-approver" = "approver", "arbiter-auditor" = "auditor" }}
"#,
        pack.display()
    );
    let server = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() });
    let admin = jwt(person("root@acme.example", json!(["arbiter-admin"]), json!([])), "tenant-key.pem");
    let auditor = jwt(person("audit@acme.example", json!(["arbiter-auditor", "staff"]), json!([])), "tenant-key.pem");
    let nobody = jwt(person("eve@acme.example", json!(["staff"]), json!([])), "tenant-key.pem");
    let both = jwt(
        person("carol@acme.example", json!(["arbiter-approver", "arbiter-auditor"]), json!(["platform-oncall"])),
        "tenant-key.pem",
    );

    assert_eq!(server.get("/v1/policies", Some(&admin)).await.status, 200);
    assert_eq!(server.get("/v1/receipts", Some(&auditor)).await.status, 200);
    assert_eq!(server.get("/v1/policies", Some(&auditor)).await.status, 403);
    assert_eq!(server.get("/v1/approvals", Some(&auditor)).await.status, 403);
    assert_eq!(server.get("/v1/receipts", Some(&nobody)).await.status, 403, "a valid token with no role");
    assert_eq!(server.get("/v1/approvals", Some(&both)).await.status, 200);
    assert_eq!(server.get("/v1/receipts", Some(&both)).await.status, 200, "two mapped roles, both held");
    let r = server.post_raw("/v1/hooks/claude-code", Some(&admin), b"{}".to_vec()).await;
    assert_eq!(r.status, 403, "SSO never grants ingress: {}", r.text);

    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut c = person("root@acme.example", json!(["arbiter-admin"]), json!([]));
        f(&mut c);
        c
    };
    let refused = [
        ("forged", jwt(person("root@acme.example", json!(["arbiter-admin"]), json!([])), "attacker-key.pem")),
        ("expired", jwt(mutate(&|c| c["exp"] = json!(now() - 3600)), "tenant-key.pem")),
        ("wrong audience", jwt(mutate(&|c| c["aud"] = json!("other")), "tenant-key.pem")),
        ("wrong issuer", jwt(mutate(&|c| c["iss"] = json!("https://evil.example/")), "tenant-key.pem")),
        ("no identity", jwt(mutate(&|c| c["email"] = json!(null)), "tenant-key.pem")),
    ];
    for (what, token) in refused {
        let r = server.get("/v1/policies", Some(&token)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
    }

    // An approval held for platform-oncall, approved by the SSO approver.
    let mut body = fixture("PreToolUse.json");
    body["session_id"] = json!("oidc-1");
    body["tool_name"] = json!("Write");
    body["tool_input"] = json!({"file_path": "/srv/repo/infra/main.tf", "content": "x"});
    let r = server.hook("claude-code", &body).await;
    let receipt = server.admin_json(&format!("/v1/receipts/{}", r.receipt_id())).await;
    let id = receipt["approval"]["id"].as_str().unwrap_or_else(|| panic!("no approval: {receipt}")).to_owned();
    let r = server.post_raw(&format!("/v1/approvals/{id}/approve"), Some(&both), b"{}".to_vec()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["resolution"]["by"], "carol@acme.example", "{}", r.text);
}

#[test]
// docs/openapi.yaml documents exactly the routes of the table, each with the
// role the router enforces (`x-arbiter-role`, absent for the probes).
fn openapi_declares_the_role_of_every_route() {
    let text =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml")).unwrap();
    let mut documented = Vec::new();
    let (mut path, mut op): (Option<String>, Option<(String, Option<String>)>) = (None, None);
    let mut flush = |path: &Option<String>, op: &mut Option<(String, Option<String>)>| {
        if let (Some(p), Some((m, role))) = (path, op.take()) {
            documented.push((m, p.clone(), role));
        }
    };
    for line in text.lines() {
        if line.starts_with("components:") {
            break;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            flush(&path, &mut op);
            path = Some(format!("/{p}"));
        } else if let Some(m) = ["get", "put", "post", "delete"].into_iter().find(|m| line == format!("    {m}:")) {
            flush(&path, &mut op);
            op = Some((m.to_uppercase(), None));
        } else if let Some(role) = line.strip_prefix("      x-arbiter-role: ")
            && let Some((_, r)) = op.as_mut()
        {
            *r = Some(role.trim().to_owned());
        }
    }
    flush(&path, &mut op);
    let mut routed: Vec<(String, String, Option<String>)> = arbiter::api::routes(1024)
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned(), r.role.map(|r| r.as_str().to_owned())))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
}
