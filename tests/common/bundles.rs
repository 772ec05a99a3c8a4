//! Signed plugin bundles made with the real CLI (`arbiter plugin keygen`
//! and `arbiter plugin sign`), and their upload; shared by the plugin
//! lifecycle and capability tests and the hot-path benchmark's swap phase.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{ARBITER, Server};

/// A publisher key made with `arbiter plugin keygen`.
pub struct Publisher {
    /// The name it signs as (and is trusted under in `[plugins.publishers]`).
    pub name: String,
    /// Its private key file.
    pub key: PathBuf,
    /// Its public key, as `keygen` printed it.
    pub public: String,
}

/// Make the key of publisher `name` in `dir`.
pub fn keygen(dir: &Path, name: &str) -> Publisher {
    let key = dir.join(format!("{name}.pem"));
    let out = Command::new(ARBITER).args(["plugin", "keygen", "--out"]).arg(&key).output().expect("keygen");
    assert!(out.status.success(), "keygen: {}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("keygen output");
    let public = printed["public_key"].as_str().expect("public_key").to_owned();
    Publisher { name: name.to_owned(), key, public }
}

/// The claude-code bundle manifest of `plugins/claude-code/bundle/`, its
/// fixture paths made absolute so the manifest can live anywhere.
pub fn claude_code_manifest() -> Value {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/claude-code/bundle");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(source.join("manifest.json")).expect("manifest")).expect("manifest JSON");
    let fixtures: Vec<Value> = manifest["fixtures"]
        .as_array()
        .expect("fixtures")
        .iter()
        .map(|f| Value::from(source.join(f.as_str().expect("fixture path")).display().to_string()))
        .collect();
    manifest["fixtures"] = Value::Array(fixtures);
    manifest
}

/// Sign `component` with `manifest` as `publisher`; the files are written
/// to `dir` as `<label>.manifest.json` and `<label>.bundle`.
pub fn sign(dir: &Path, publisher: &Publisher, label: &str, component: &str, manifest: &Value) -> Vec<u8> {
    let source = dir.join(format!("{label}.manifest.json"));
    std::fs::write(&source, serde_json::to_vec_pretty(manifest).expect("json")).expect("write manifest");
    let out_path = dir.join(format!("{label}.bundle"));
    let _ = std::fs::remove_file(&out_path);
    let out = Command::new(ARBITER)
        .args(["plugin", "sign", "--publisher", &publisher.name, "--key"])
        .arg(&publisher.key)
        .arg("--manifest")
        .arg(&source)
        .arg("--component")
        .arg(component)
        .arg("-o")
        .arg(&out_path)
        .output()
        .expect("sign");
    assert!(out.status.success(), "sign {label}: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&out_path).expect("bundle")
}

/// `PUT /v1/plugins/{name}` as the admin: the status and the JSON answer.
pub async fn put_bundle(server: &Server, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let r = server
        .http
        .put(server.url(&format!("/v1/plugins/{name}")))
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .expect("upload");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON answer"))
}
