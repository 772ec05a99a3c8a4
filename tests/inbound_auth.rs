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
    // A percent-encoded name reaches the same integration and its own auth.
    let r = server.post_raw("/v1/hooks/st%75dio", Some(&server.ingress_token), body.clone()).await;
    assert_eq!(r.status, 401, "an encoded integration name dodged its auth: {}", r.text);

    // The static-bearer integration, and the default one with the ingress token.
    let r = server.post_raw("/v1/hooks/tester", Some("static-test-token-0123456789"), body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = server.post_raw("/v1/hooks/tester", Some(&server.ingress_token), body.clone()).await;
    assert_eq!(r.status, 401);
    let r = server.post_raw("/v1/hooks/claude-code", Some(&server.ingress_token), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Request headers, as (name, value) pairs.
type Headers = Vec<(&'static str, String)>;

/// Standard Webhooks signature header of `body`.
fn standard_signature(secret_b64: &str, id: &str, ts: u64, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = base64::engine::general_purpose::STANDARD.decode(secret_b64).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

async fn signed(server: &common::Server, path: &str, headers: &[(&str, String)], body: &[u8]) -> common::Reply {
    let mut req = server.http.post(server.url(path)).header("content-type", "application/json").body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    common::Reply { status, headers, text: resp.text().await.unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// HMAC-signed webhooks: the Standard Webhooks preset and the generic
// `sha256=<hex>` form accept a fresh, correct signature only; anything else
// is a 401 with no decision and no receipt.
async fn hmac_integrations_accept_only_fresh_correct_signatures() {
    const KEY_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const GENERIC: &str = "generic-webhook-secret-0123";
    let config = format!(
        r#"
[integrations.webhooks]
plugin = "claude-code"
[integrations.webhooks.auth]
kind = "hmac"
scheme = "standard-webhooks"
secret = "whsec_{KEY_B64}"

[integrations.github-style]
plugin = "claude-code"
[integrations.github-style.auth]
kind = "hmac"
scheme = "sha256"
secret = "{GENERIC}"
signature_header = "X-Hub-Signature-256"
timestamp_header = "X-Request-Timestamp"
tolerance_secs = 60
"#
    );
    let server = Server::start_with(ServerOptions { config: Some(config), ..ServerOptions::default() });
    let body = serde_json::to_vec(&pre_tool_use_bash("ls", "hmac-session")).unwrap();
    let before = server.all_receipts().await.len();
    let t = now();
    let std_headers = |id: &str, ts: u64, sig: String| {
        vec![("webhook-id", id.to_owned()), ("webhook-timestamp", ts.to_string()), ("webhook-signature", sig)]
    };

    let ok = signed(
        &server,
        "/v1/hooks/webhooks",
        &std_headers("msg_1", t, standard_signature(KEY_B64, "msg_1", t, &body)),
        &body,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.header("x-arbiter-decision").as_deref(), Some("ALLOW"));

    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let stale = t - 600;
    let refused: Vec<(&str, Headers, &[u8])> = vec![
        ("tampered body", std_headers("msg_2", t, standard_signature(KEY_B64, "msg_2", t, &body)), &tampered),
        ("stale timestamp", std_headers("msg_3", stale, standard_signature(KEY_B64, "msg_3", stale, &body)), &body),
        ("other id", std_headers("msg_4", t, standard_signature(KEY_B64, "msg_5", t, &body)), &body),
        (
            "wrong key",
            std_headers("msg_6", t, standard_signature("b3RoZXIta2V5LTAxMjM0NTY3ODk=", "msg_6", t, &body)),
            &body,
        ),
        ("no signature", vec![("webhook-id", "msg_7".to_owned()), ("webhook-timestamp", t.to_string())], &body),
        ("ingress token", vec![("authorization", format!("Bearer {}", server.ingress_token))], &body),
    ];
    for (what, headers, b) in refused {
        let r = signed(&server, "/v1/hooks/webhooks", &headers, b).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text);
        assert!(r.header("x-arbiter-decision").is_none(), "{what} made a decision");
    }

    // The generic form: sha256=<hex> over `<timestamp>.<body>`.
    let generic = |ts: u64, b: &[u8]| {
        use hmac::Mac as _;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(GENERIC.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(b);
        vec![
            ("x-hub-signature-256", format!("sha256={}", hex::encode(mac.finalize().into_bytes()))),
            ("x-request-timestamp", ts.to_string()),
        ]
    };
    let r = signed(&server, "/v1/hooks/github-style", &generic(t, &body), &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = signed(&server, "/v1/hooks/github-style", &generic(t, &body), &tampered).await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = signed(&server, "/v1/hooks/github-style", &generic(t - 120, &body), &body).await;
    assert_eq!(r.status, 401, "outside the 60 s window: {}", r.text);

    assert_eq!(server.all_receipts().await.len(), before + 2, "only the two accepted requests were decided");
}
