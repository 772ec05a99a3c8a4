//! Inbound authentication of an integration whose vendor presents a
//! Microsoft Entra ID JWT (Copilot Studio): signature against a JWKS served
//! on loopback, issuer, tenant, audience, expiry and the app allow-list; the
//! ingress token is not accepted there, and other integrations keep it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed expectation aborts the test with a message"
)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Server, ServerOptions, pre_tool_use_bash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const TENANT: &str = "98e2f7d2-0000-4000-8000-000000000001";
const AUDIENCE: &str = "api://arbiter-threat-detection";
const APP: &str = "5be3e14e-0000-4000-8000-00000000c0de";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/entra").join(name)).unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Value {
    let t = now();
    json!({"iss": format!("https://login.microsoftonline.com/{TENANT}/v2.0"), "aud": AUDIENCE, "tid": TENANT,
           "azp": APP, "iat": t, "nbf": t - 10, "exp": t + 600, "sub": "copilot-studio"})
}

fn sign(claims: &Value, key: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-kid-1".to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(&fixture(key)).unwrap()).unwrap()
}

async fn jwks_server() -> String {
    let jwks: Value = serde_json::from_slice(&fixture("jwks.json")).unwrap();
    let app = axum::Router::new().route("/keys", axum::routing::get(move || async move { axum::Json(jwks) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/keys")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entra_integration_accepts_only_valid_tokens_of_allowed_apps() {
    let jwks = jwks_server().await;
    let config = format!(
        r#"
[integrations.studio]
plugin = "claude-code"
[integrations.studio.auth]
kind = "entra"
tenant_id = "{TENANT}"
audience = "{AUDIENCE}"
allowed_app_ids = ["{APP}"]
jwks_url = "{jwks}"

[integrations.tester]
plugin = "claude-code"
[integrations.tester.auth]
kind = "bearer"
token = "static-test-token-0123456789"
"#
    );
    let server = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() });
    let body = serde_json::to_vec(&pre_tool_use_bash("ls", "entra-session")).unwrap();
    let status = |token: String| {
        let server = &server;
        let body = body.clone();
        async move { server.post_raw("/v1/hooks/studio", Some(&token), body).await.status }
    };

    assert_eq!(status(sign(&claims(), "tenant-key.pem")).await, 200, "a valid token is accepted");
    let v1 = {
        let mut c = claims();
        c["iss"] = json!(format!("https://sts.windows.net/{TENANT}/"));
        c.as_object_mut().unwrap().remove("azp");
        c["appid"] = json!(APP);
        c
    };
    assert_eq!(status(sign(&v1, "tenant-key.pem")).await, 200, "a v1 token (appid) is accepted");

    let refused: Vec<(&str, Value, &str)> = vec![
        ("forged signature", claims(), "attacker-key.pem"),
        (
            "wrong audience",
            {
                let mut c = claims();
                c["aud"] = json!("api://other");
                c
            },
            "tenant-key.pem",
        ),
        (
            "wrong tenant",
            {
                let mut c = claims();
                c["tid"] = json!("another-tenant");
                c
            },
            "tenant-key.pem",
        ),
        (
            "wrong issuer",
            {
                let mut c = claims();
                c["iss"] = json!("https://evil.example/");
                c
            },
            "tenant-key.pem",
        ),
        (
            "unknown app",
            {
                let mut c = claims();
                c["azp"] = json!("someone-else");
                c
            },
            "tenant-key.pem",
        ),
        (
            "expired",
            {
                let mut c = claims();
                c["exp"] = json!(now() - 3600);
                c["nbf"] = json!(now() - 7200);
                c
            },
            "tenant-key.pem",
        ),
    ];
    for (what, c, key) in refused {
        assert_eq!(status(sign(&c, key)).await, 401, "{what} must be refused");
    }
    assert_eq!(status("not-a-jwt".to_owned()).await, 401);
    assert_eq!(status(server.ingress_token.clone()).await, 401, "the ingress token is not an Entra token");
    let r = server.post_raw("/v1/hooks/studio", None, body.clone()).await;
    assert_eq!(r.status, 401);

    // The static-bearer integration, and the default one with the ingress token.
    let r = server.post_raw("/v1/hooks/tester", Some("static-test-token-0123456789"), body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = server.post_raw("/v1/hooks/tester", Some(&server.ingress_token), body.clone()).await;
    assert_eq!(r.status, 401);
    let r = server.post_raw("/v1/hooks/claude-code", Some(&server.ingress_token), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
