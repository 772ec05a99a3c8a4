//! Capabilities of `arbiter:plugin@0.2.0` plugins: outbound HTTP to
//! allow-listed hosts, a key-value namespace in the store, configuration
//! values and secrets.
//!
//! Deny by default. The operator grants capabilities per plugin name
//! (`[plugins.grants.<name>]`); a plugin from a signed bundle gets the ones
//! its manifest requests (each must be granted, or the bundle is refused at
//! load), an unsigned plugin file gets every one granted to its name. A call
//! to a capability the plugin does not have returns
//! `capability-error::not-granted`: an error result, never a trap.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjall::PartitionHandle;

use crate::config::{Grant, HttpGrant, KvGrant, SecretSource};

use super::bindings_v2::arbiter::plugin::capabilities::CapabilityError;
use super::bindings_v2::arbiter::plugin::http::{Request as HttpRequest, Response as HttpResponse};

/// Capability names a manifest may request.
pub const NAMES: &[&str] = &["http", "kv", "config", "secrets"];

/// Longest URL, most request headers, largest request body a plugin may send.
const MAX_URL_BYTES: usize = 4096;
const MAX_HEADERS: usize = 64;
const MAX_REQUEST_BODY: usize = 1024 * 1024;
/// Request headers a plugin may not set.
const FORBIDDEN_HEADERS: &[&str] = &["host", "connection", "content-length", "transfer-encoding", "upgrade"];
/// Most redirects followed (each to an allowed host).
const MAX_REDIRECTS: usize = 5;
/// Longest kv key; most keys one `list-prefix` returns.
const MAX_KEY_BYTES: usize = 256;
const MAX_LIST: usize = 1000;

/// A secret value. Its `Debug` never shows it, so it cannot reach a log by
/// accident.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The capabilities one plugin was granted, resolved at start: secrets read,
/// the HTTP client built.
#[derive(Debug, Default)]
pub struct Granted {
    http: Option<Http>,
    kv: Option<KvGrant>,
    config: Option<BTreeMap<String, String>>,
    secrets: Option<BTreeMap<String, Secret>>,
}

#[derive(Debug, Clone)]
struct Http {
    grant: HttpGrant,
    client: reqwest::Client,
}

impl Granted {
    /// Resolve `grant` for plugin `name`.
    pub fn resolve(name: &str, grant: &Grant) -> Result<Self, String> {
        let http = match &grant.http {
            None => None,
            Some(g) => {
                for host in &g.hosts {
                    if host.is_empty() || host.contains('/') || host.contains('@') {
                        return Err(format!("plugins.grants.{name}.http.hosts: `{host}` is not a host or host:port"));
                    }
                }
                let allowed = g.hosts.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>();
                let policy = reqwest::redirect::Policy::custom(move |attempt| {
                    if attempt.previous().len() >= MAX_REDIRECTS {
                        attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                    } else if let Err(e) = check_url(attempt.url(), &allowed) {
                        attempt.error(format!("redirect refused: {e}"))
                    } else {
                        attempt.follow()
                    }
                });
                let client = reqwest::Client::builder()
                    .redirect(policy)
                    .no_proxy()
                    .build()
                    .map_err(|e| format!("plugins.grants.{name}.http: cannot build the HTTP client: {e}"))?;
                Some(Http { grant: g.clone(), client })
            }
        };
        let secrets = match &grant.secrets {
            None => None,
            Some(sources) => {
                let mut secrets = BTreeMap::new();
                for (key, source) in sources {
                    let value = match source {
                        SecretSource::File(path) => std::fs::read_to_string(path)
                            .map(|v| v.trim_end_matches(['\r', '\n']).to_owned())
                            .map_err(|e| {
                                format!("plugins.grants.{name}.secrets.{key}: cannot read `{}`: {e}", path.display())
                            })?,
                        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
                            format!("plugins.grants.{name}.secrets.{key}: environment variable `{var}` is not set")
                        })?,
                    };
                    secrets.insert(key.clone(), Secret(value.into()));
                }
                Some(secrets)
            }
        };
        Ok(Self { http, kv: grant.kv.clone(), config: grant.config.clone(), secrets })
    }

    /// Names of the capabilities held.
    pub fn names(&self) -> Vec<&'static str> {
        let held = [self.http.is_some(), self.kv.is_some(), self.config.is_some(), self.secrets.is_some()];
        NAMES.iter().zip(held).filter(|(_, h)| *h).map(|(n, _)| *n).collect()
    }

    /// Only the capabilities named in `requested`.
    pub fn restricted_to(&self, requested: &[&str]) -> Self {
        let keep = |name: &str| requested.contains(&name);
        Self {
            http: self.http.clone().filter(|_| keep("http")),
            kv: self.kv.clone().filter(|_| keep("kv")),
            config: self.config.clone().filter(|_| keep("config")),
            secrets: self.secrets.clone().filter(|_| keep("secrets")),
        }
    }
}

fn not_granted(capability: &str) -> CapabilityError {
    CapabilityError::NotGranted(format!("the `{capability}` capability is not granted to this plugin"))
}

/// `https://` to an allowed host, or `http://` to an allowed loopback host.
fn check_url(url: &reqwest::Url, allowed: &[String]) -> Result<(), String> {
    let host = url.host_str().ok_or("the URL has no host")?.to_ascii_lowercase();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&host) => {}
        "http" => return Err(format!("plain http is allowed only to loopback hosts, not `{host}`")),
        other => return Err(format!("scheme `{other}` is not allowed")),
    }
    let default_port = if url.scheme() == "https" { 443 } else { 80 };
    let with_port = format!("{host}:{port}");
    let ok = allowed.iter().any(|a| *a == with_port || (*a == host && port == default_port));
    if ok { Ok(()) } else { Err(format!("host `{with_port}` is not on the allow-list")) }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `http.fetch` within `budget` (the time left of the plugin call).
pub async fn fetch(granted: &Granted, request: HttpRequest, budget: Duration) -> Result<HttpResponse, CapabilityError> {
    let http = granted.http.as_ref().ok_or_else(|| not_granted("http"))?;
    if request.url.len() > MAX_URL_BYTES {
        return Err(CapabilityError::Limit(format!("the URL is longer than {MAX_URL_BYTES} bytes")));
    }
    if request.headers.len() > MAX_HEADERS || request.body.len() > MAX_REQUEST_BODY {
        return Err(CapabilityError::Limit(format!(
            "at most {MAX_HEADERS} headers and a {MAX_REQUEST_BODY} byte body may be sent"
        )));
    }
    let url = reqwest::Url::parse(&request.url).map_err(|e| CapabilityError::Denied(format!("bad URL: {e}")))?;
    let allowed = http.grant.hosts.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>();
    check_url(&url, &allowed).map_err(CapabilityError::Denied)?;
    let method = reqwest::Method::from_bytes(request.method.as_bytes())
        .map_err(|_| CapabilityError::Denied(format!("bad method `{}`", request.method)))?;
    let timeout = Duration::from_millis(http.grant.timeout_ms).min(budget);
    if timeout.is_zero() {
        return Err(CapabilityError::Failed("the plugin call's deadline has passed".to_owned()));
    }
    let mut builder = http.client.request(method, url).timeout(timeout).body(request.body);
    for (name, value) in &request.headers {
        // The host sets these from the URL and body; a plugin's own `host`
        // would address another site on the allowed connection.
        if FORBIDDEN_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return Err(CapabilityError::Denied(format!("the `{name}` header is set by the host")));
        }
        builder = builder.header(name.as_str(), value.as_str());
    }
    let cap = http.grant.max_response_bytes;
    let exchange = async {
        let mut response = builder.send().await.map_err(|e| CapabilityError::Failed(describe(&e)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(CapabilityError::Limit(format!("the response body is larger than {cap} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| CapabilityError::Failed(describe(&e)))? {
            if body.len() + chunk.len() > cap {
                return Err(CapabilityError::Limit(format!("the response body is larger than {cap} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status, headers, body })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CapabilityError::Failed(format!("no response within {} ms", timeout.as_millis())))?
}

/// A reqwest error with its causes, which name the refused redirect.
fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// The plugins' key-value namespaces: one store partition, keys prefixed
/// with the plugin name and a 0 byte (names never hold one).
#[derive(Clone)]
pub struct Kv {
    partition: PartitionHandle,
    /// Serialises writes so a quota check and its write are one step.
    writes: Arc<Mutex<()>>,
}

impl Kv {
    /// Namespaces in `partition`.
    pub fn new(partition: PartitionHandle) -> Self {
        Self { partition, writes: Arc::new(Mutex::new(())) }
    }

    fn key(plugin: &str, key: &str) -> Result<Vec<u8>, CapabilityError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(CapabilityError::Limit(format!("keys are at most {MAX_KEY_BYTES} bytes")));
        }
        Ok([plugin.as_bytes(), b"\0", key.as_bytes()].concat())
    }

    /// The grant and the store, or why the call cannot be served.
    fn open<'a>(granted: &'a Granted, kv: Option<&'a Self>) -> Result<(&'a KvGrant, &'a Self), CapabilityError> {
        match (&granted.kv, kv) {
            (Some(grant), Some(kv)) => Ok((grant, kv)),
            (Some(_), None) => Err(Self::failed("not available")),
            (None, _) => Err(not_granted("kv")),
        }
    }

    fn failed(e: impl std::fmt::Display) -> CapabilityError {
        CapabilityError::Failed(format!("key-value store: {e}"))
    }

    /// `kv.get`.
    pub fn get(
        kv: Option<&Self>,
        granted: &Granted,
        plugin: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, CapabilityError> {
        let (_, kv) = Self::open(granted, kv)?;
        Ok(kv.partition.get(Self::key(plugin, key)?).map_err(Self::failed)?.map(|v| v.to_vec()))
    }

    /// `kv.set`, within the value cap and the namespace quota.
    pub fn set(
        kv: Option<&Self>,
        granted: &Granted,
        plugin: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), CapabilityError> {
        let (grant, kv) = Self::open(granted, kv)?;
        if value.len() > grant.max_value_bytes {
            return Err(CapabilityError::Limit(format!("values are at most {} bytes", grant.max_value_bytes)));
        }
        let full = Self::key(plugin, key)?;
        let _write = kv.writes.lock().map_err(|_| Self::failed("a writer panicked"))?;
        let prefix = [plugin.as_bytes(), b"\0"].concat();
        let mut used = 0u64;
        for entry in kv.partition.prefix(&prefix) {
            let (k, v) = entry.map_err(Self::failed)?;
            if *k != *full {
                used += (k.len() - prefix.len() + v.len()) as u64;
            }
        }
        if used + (key.len() + value.len()) as u64 > grant.quota_bytes {
            return Err(CapabilityError::Limit(format!(
                "the namespace quota of {} bytes would be exceeded",
                grant.quota_bytes
            )));
        }
        kv.partition.insert(full, value).map_err(Self::failed)
    }

    /// `kv.delete`.
    pub fn delete(kv: Option<&Self>, granted: &Granted, plugin: &str, key: &str) -> Result<(), CapabilityError> {
        let (_, kv) = Self::open(granted, kv)?;
        let _write = kv.writes.lock().map_err(|_| Self::failed("a writer panicked"))?;
        kv.partition.remove(Self::key(plugin, key)?).map_err(Self::failed)
    }

    /// `kv.list-prefix`: at most [`MAX_LIST`] keys.
    pub fn list(
        kv: Option<&Self>,
        granted: &Granted,
        plugin: &str,
        prefix: &str,
    ) -> Result<Vec<String>, CapabilityError> {
        let (_, kv) = Self::open(granted, kv)?;
        let full = Self::key(plugin, prefix)?;
        let skip = plugin.len() + 1;
        let mut keys = Vec::new();
        for entry in kv.partition.prefix(&full).take(MAX_LIST) {
            let (k, _) = entry.map_err(Self::failed)?;
            keys.push(String::from_utf8_lossy(k.get(skip..).unwrap_or_default()).into_owned());
        }
        Ok(keys)
    }
}

/// `plugin-config.get`.
pub fn config(granted: &Granted, key: &str) -> Result<Option<String>, CapabilityError> {
    Ok(granted.config.as_ref().ok_or_else(|| not_granted("config"))?.get(key).cloned())
}

/// `secrets.get`.
pub fn secret(granted: &Granted, name: &str) -> Result<String, CapabilityError> {
    let secrets = granted.secrets.as_ref().ok_or_else(|| not_granted("secrets"))?;
    secrets
        .get(name)
        .map(|s| s.0.to_string())
        .ok_or_else(|| CapabilityError::NotGranted(format!("no secret named `{name}` is granted to this plugin")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn urls_need_an_allowed_host_and_https_or_loopback() {
        let allowed = vec!["api.example.com".to_owned(), "127.0.0.1:8080".to_owned()];
        let check = |u: &str| check_url(&reqwest::Url::parse(u).unwrap(), &allowed);
        assert!(check("https://api.example.com/x").is_ok());
        assert!(check("https://API.example.com:443/x").is_ok());
        assert!(check("https://api.example.com:8443/x").is_err(), "a non-default port needs host:port");
        assert!(check("http://api.example.com/x").is_err(), "plain http to a remote host");
        assert!(check("http://127.0.0.1:8080/x").is_ok());
        assert!(check("http://127.0.0.1:8081/x").is_err());
        assert!(check("http://localhost:8080/x").is_err(), "localhost is another host name");
        assert!(check("ftp://api.example.com/x").is_err());
    }

    fn grant(toml_text: &str) -> Grant {
        toml::from_str(toml_text).unwrap()
    }

    #[tokio::test]
    async fn fetch_needs_the_grant_and_time_left_in_the_call() {
        let request = || HttpRequest {
            method: "GET".to_owned(),
            url: "http://127.0.0.1:9/".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        };
        let none = Granted::default();
        let r = fetch(&none, request(), Duration::from_secs(1)).await;
        assert!(matches!(r, Err(CapabilityError::NotGranted(_))), "{r:?}");
        let granted = Granted::resolve("p", &grant("[http]\nhosts = [\"127.0.0.1:9\"]")).unwrap();
        // No time left of the plugin call: refused before any connection.
        let r = fetch(&granted, request(), Duration::ZERO).await;
        assert!(matches!(&r, Err(CapabilityError::Failed(m)) if m.contains("deadline")), "{r:?}");
        let mut spoofed = request();
        spoofed.headers.push(("Host".to_owned(), "elsewhere.example".to_owned()));
        let r = fetch(&granted, spoofed, Duration::from_secs(1)).await;
        assert!(matches!(&r, Err(CapabilityError::Denied(m)) if m.contains("`Host`")), "{r:?}");
    }

    #[test]
    fn secrets_resolve_from_env_and_files_and_missing_ones_fail_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "from-file\n").unwrap();
        let path = std::env::var("PATH").unwrap();
        let text = format!("[secrets]\na = {{ file = {:?} }}\nb = {{ env = \"PATH\" }}", file.display().to_string());
        let granted = Granted::resolve("p", &grant(&text)).unwrap();
        assert_eq!(secret(&granted, "a").unwrap(), "from-file");
        assert_eq!(secret(&granted, "b").unwrap(), path);
        assert!(matches!(secret(&granted, "c"), Err(CapabilityError::NotGranted(_))));
        assert_eq!(granted.names(), ["secrets"]);
        assert_eq!(granted.restricted_to(&["kv"]).names(), Vec::<&str>::new());
        let missing = grant("[secrets]\na = { env = \"ARBITER_TEST_NO_SUCH_VARIABLE\" }");
        let e = Granted::resolve("p", &missing).unwrap_err();
        assert!(e.contains("ARBITER_TEST_NO_SUCH_VARIABLE") && e.contains("plugins.grants.p.secrets.a"), "{e}");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
