//! Signed plugin bundles (`arbiter.bundle/v1`): one file that carries a
//! component, its manifest, self-test fixtures and a publisher's detached
//! Ed25519 signature. docs/plugins.md describes the format for publishers.
//!
//! The bundle is an uncompressed ustar archive with exactly these entries:
//! `manifest.json` (the manifest, RFC 8785 canonical JSON), `signature.json`,
//! `component.wasm` and `fixtures/<name>` for each fixture the manifest
//! lists. The manifest carries the SHA-256 and size of the component and of
//! every fixture, so the *bundle digest* — `sha256:` and the hex SHA-256 of
//! the JCS bytes of the manifest — covers every byte that matters. The
//! signature is Ed25519 by the publisher's key over the ASCII bytes of
//! [`SIGNED_CONTEXT`] followed by that digest.
//!
//! [`open`] checks in this order, and refuses at the first failure: size,
//! archive structure, presence of a signature, the digest the signature
//! names against the manifest's, the publisher and its key, the signature,
//! the manifest's fields, then every file's hash and size. Nothing in the
//! manifest is interpreted before its signature verifies.
//!
//! This file is also compiled into `host/build.rs`, which signs the bundled
//! plugins, so it depends only on external crates.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The `format` every manifest of this version carries.
pub const FORMAT: &str = "arbiter.bundle/v1";

/// Prefix of the signed message, so a bundle signature can never be taken
/// for a signature over anything else the same key might sign.
pub const SIGNED_CONTEXT: &str = "arbiter-bundle-v1:";

/// The publisher under which the plugins compiled into the binary are
/// signed (by a key made for each build; see `host/build.rs`).
pub const BUNDLED_PUBLISHER: &str = "arbiter-bundled";

const MANIFEST_ENTRY: &str = "manifest.json";
const SIGNATURE_ENTRY: &str = "signature.json";
const COMPONENT_ENTRY: &str = "component.wasm";
const FIXTURE_PREFIX: &str = "fixtures/";

/// Largest manifest: a few hundred bytes in practice.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
/// Largest signature document (about 250 bytes in practice).
const MAX_SIGNATURE_BYTES: u64 = 4 * 1024;
/// Largest fixture: one vendor request and a few expected replies.
pub const MAX_FIXTURE_BYTES: u64 = 1024 * 1024;
/// Most fixtures per bundle: each costs a decode and a few encodes at load.
pub const MAX_FIXTURES: usize = 64;
/// Most integrations and capabilities a manifest may list.
const MAX_LIST: usize = 32;

/// Why a bundle was refused. Every variant has a stable [`code`](Self::code)
/// that the HTTP API and the CLI report.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle is larger than the configured cap.
    #[error("the bundle is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// Not a well-formed bundle archive (or a manifest field is invalid).
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// No `signature.json`.
    #[error("the bundle is not signed (no `signature.json`)")]
    Unsigned,
    /// The signing publisher is not among the trusted ones.
    #[error("publisher `{0}` is not trusted (not in `plugins.publishers`)")]
    UnknownPublisher(String),
    /// The signature names a key other than the trusted publisher's.
    #[error("the bundle is signed with key `{signed}`, but publisher `{publisher}` is trusted with key `{trusted}`")]
    WrongKey {
        /// The publisher.
        publisher: String,
        /// Key id in the signature.
        signed: String,
        /// Key id configured for the publisher.
        trusted: String,
    },
    /// The signature does not verify under the publisher's key.
    #[error("bad signature: the signature of publisher `{0}` does not verify over the bundle digest")]
    BadSignature(String),
    /// The manifest changed after signing: its digest is not the signed one.
    #[error("tampered manifest: its digest is `{actual}`, the signature covers `{signed}`")]
    TamperedManifest {
        /// Digest named in the signature.
        signed: String,
        /// Digest of the manifest in the bundle.
        actual: String,
    },
    /// A file changed after signing: its hash or size is not the manifest's.
    #[error("tampered {what}: SHA-256 `{actual}` ({size} bytes) is not the signed `{signed}` ({signed_size} bytes)")]
    TamperedFile {
        /// `component` or `fixture <name>`.
        what: String,
        /// Hash in the manifest.
        signed: String,
        /// Size in the manifest.
        signed_size: u64,
        /// Hash of the bytes in the bundle.
        actual: String,
        /// Size of the bytes in the bundle.
        size: u64,
    },
}

impl BundleError {
    /// Stable machine-readable code of the failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "bundle_too_large",
            Self::Malformed(_) => "bundle_malformed",
            Self::Unsigned => "bundle_unsigned",
            Self::UnknownPublisher(_) => "unknown_publisher",
            Self::WrongKey { .. } | Self::BadSignature(_) => "bad_signature",
            Self::TamperedManifest { .. } => "tampered_manifest",
            Self::TamperedFile { .. } => "tampered_file",
        }
    }
}

fn malformed(message: impl Into<String>) -> BundleError {
    BundleError::Malformed(message.into())
}

/// The manifest inside a bundle. Its JCS bytes are what the publisher signs
/// (through the bundle digest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Plugin name; must equal the name the component's `describe` returns
    /// and the `{name}` it is uploaded under. `[A-Za-z0-9_-]`, 1 to 64.
    pub name: String,
    /// Semantic version of this bundle. Its `MAJOR.MINOR.PATCH[-PRE]` part
    /// must equal the version `describe` returns; `+BUILD` metadata may
    /// tell two bundles of the same component apart.
    pub version: String,
    /// Vendor product the adapter serves, e.g. `Claude Code`.
    pub vendor: String,
    /// WIT package the component implements, e.g. `arbiter:plugin@0.1.0`.
    pub wit: String,
    /// Integrations (`/v1/hooks/{integration}` routes) the publisher meant
    /// it for. Informative: the operator's config maps integrations.
    #[serde(default)]
    pub integrations: Vec<String>,
    /// Host capabilities the plugin asks for, each an object with a `name`.
    /// The host grants none yet, so a bundle that asks for one is refused.
    #[serde(default)]
    pub capabilities: Vec<Value>,
    /// The component's hash and size.
    pub component: FileRef,
    /// Self-test fixtures, run against the new instance before it serves.
    pub fixtures: Vec<FixtureRef>,
}

/// Hash and size of one file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

/// One fixture of the manifest: stored at `fixtures/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRef {
    /// File name, `[A-Za-z0-9._-]`, 1 to 100, not starting with `.`.
    pub name: String,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// Length in bytes.
    pub size: u64,
}

/// What a publisher writes before signing: the manifest without the
/// hashes, which `sign` computes. Fixture paths are relative to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceManifest {
    /// See [`Manifest::name`].
    pub name: String,
    /// See [`Manifest::version`].
    pub version: String,
    /// See [`Manifest::vendor`].
    pub vendor: String,
    /// See [`Manifest::wit`].
    pub wit: String,
    /// See [`Manifest::integrations`].
    #[serde(default)]
    pub integrations: Vec<String>,
    /// See [`Manifest::capabilities`].
    #[serde(default)]
    pub capabilities: Vec<Value>,
    /// Fixture files; each is stored under its file name.
    pub fixtures: Vec<String>,
}

/// `signature.json`: the detached signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureDoc {
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The publisher's name, looked up among the trusted publishers.
    pub publisher: String,
    /// `ed25519:` and the first 16 hex digits of SHA-256 of the public key.
    pub key_id: String,
    /// The bundle digest signed: `sha256:<hex>` of the manifest's JCS bytes.
    pub digest: String,
    /// Standard base64 of the 64-byte signature over
    /// [`SIGNED_CONTEXT`] + `digest`.
    pub value: String,
}

/// One self-test case: a vendor request, what decoding it must give, and
/// the replies expected for some verdicts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What the case shows.
    #[serde(default)]
    pub description: String,
    /// Integration settings the plugin reads through `config`.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// The request.
    pub request: FixtureRequest,
    /// What `decode` must return.
    pub decode: ExpectDecode,
    /// Verdicts to `encode`, with the reply each must produce.
    #[serde(default)]
    pub replies: Vec<ExpectReply>,
}

/// A vendor request of a fixture.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureRequest {
    /// HTTP method. Default = `POST`.
    #[serde(default = "post")]
    pub method: String,
    /// Path below `/v1/hooks/{integration}`. Default = empty.
    #[serde(default)]
    pub path: String,
    /// Headers (names lower-cased by the host).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The JSON body; absent = an empty body.
    #[serde(default)]
    pub body: Option<Value>,
}

fn post() -> String {
    "POST".to_owned()
}

/// The expected outcome of `decode`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectDecode {
    /// `events`, `malformed` or `unsupported`.
    pub result: DecodeOutcome,
    /// The requester's session, when given.
    #[serde(default)]
    pub session: Option<String>,
    /// When given, exactly this many events, each containing these fields
    /// (`type`, `tool`, `operation`, `resource`, `parameters`, `text`,
    /// `original_tool`, `event_kind`, `call_id`, `output`, `detail`).
    #[serde(default)]
    pub events: Option<Vec<serde_json::Map<String, Value>>>,
}

/// How `decode` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecodeOutcome {
    /// It returns events.
    Events,
    /// It refuses the request as malformed.
    Malformed,
    /// It refuses the request as unsupported.
    Unsupported,
}

/// A verdict to encode and the reply it must give.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectReply {
    /// The verdict handed to `encode`.
    pub verdict: FixtureVerdict,
    /// The HTTP status the reply must have.
    pub status: u16,
    /// When given, the reply body must be JSON containing this value: every
    /// member of an expected object must be in the actual one (recursively);
    /// arrays match element by element; other values are equal.
    #[serde(default)]
    pub body: Option<Value>,
}

/// A verdict of a fixture.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureVerdict {
    /// `allow`, `deny`, `modify`, `step_up` or `defer`.
    pub decision: String,
    /// The reason. Default = empty.
    #[serde(default)]
    pub reason: String,
    /// Whether the request held a decision point. Default = true.
    #[serde(default = "yes")]
    pub decided: bool,
    /// Whether a fault forced it. Default = false.
    #[serde(default)]
    pub fault: bool,
    /// Receipt id handed to the plugin. Default = none.
    #[serde(default)]
    pub receipt_id: Option<String>,
    /// For `modify`: the rewritten parameters.
    #[serde(default)]
    pub modified_parameters: Option<Value>,
}

fn yes() -> bool {
    true
}

/// Publishers whose signatures are trusted: name → Ed25519 public key.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    publishers: BTreeMap<String, VerifyingKey>,
}

impl Trust {
    /// Trust `key` for `publisher` (replacing an earlier key of that name).
    pub fn add(&mut self, publisher: &str, key: VerifyingKey) {
        self.publishers.insert(publisher.to_owned(), key);
    }

    /// Names of the trusted publishers.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.publishers.keys().map(String::as_str)
    }
}

/// Key id of a public key: `ed25519:` and the first 16 hex digits of its
/// SHA-256 (the receipt keys' scheme).
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("ed25519:{}", hex::encode(digest.get(..8).unwrap_or_default()))
}

/// Parse a public key given as standard base64 of its 32 bytes.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|e| format!("not base64: {e}"))?;
    let bytes: [u8; 32] =
        bytes.try_into().map_err(|b: Vec<u8>| format!("an Ed25519 public key is 32 bytes, not {}", b.len()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// `sha256:<hex>` of the JCS (RFC 8785) bytes of `manifest`.
pub fn bundle_digest(manifest: &Value) -> Result<String, BundleError> {
    let canonical =
        serde_jcs::to_vec(manifest).map_err(|e| malformed(format!("manifest cannot be canonicalised: {e}")))?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&canonical))))
}

fn signed_message(digest: &str) -> Vec<u8> {
    format!("{SIGNED_CONTEXT}{digest}").into_bytes()
}

/// A bundle whose signature, hashes and manifest were checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// The bundle digest (`sha256:<hex>`).
    pub digest: String,
    /// The publisher that signed it.
    pub publisher: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// The component bytes.
    pub component: Vec<u8>,
    /// Fixtures in manifest order: (name, bytes).
    pub fixtures: Vec<(String, Vec<u8>)>,
}

/// The raw entries of a bundle archive, unchecked.
struct Entries {
    manifest: Vec<u8>,
    signature: Option<Vec<u8>>,
    component: Vec<u8>,
    fixtures: BTreeMap<String, Vec<u8>>,
}

fn read_entries(bytes: &[u8], max_bytes: usize) -> Result<Entries, BundleError> {
    if bytes.len() > max_bytes {
        return Err(BundleError::TooLarge { size: bytes.len(), limit: max_bytes });
    }
    let mut archive = tar::Archive::new(bytes);
    let (mut manifest, mut signature, mut component) = (None, None, None);
    let mut fixtures = BTreeMap::new();
    let entries = archive.entries().map_err(|e| malformed(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| malformed(format!("not a tar archive: {e}")))?;
        let path = entry.path().map_err(|e| malformed(format!("bad entry name: {e}")))?;
        let path = path.to_str().ok_or_else(|| malformed("an entry name is not UTF-8"))?.to_owned();
        if !entry.header().entry_type().is_file() {
            return Err(malformed(format!("entry `{path}` is not a regular file")));
        }
        let (slot, cap) = match path.as_str() {
            MANIFEST_ENTRY => (&mut manifest, MAX_MANIFEST_BYTES),
            SIGNATURE_ENTRY => (&mut signature, MAX_SIGNATURE_BYTES),
            COMPONENT_ENTRY => (&mut component, u64::MAX),
            other => match other.strip_prefix(FIXTURE_PREFIX) {
                Some(name) if valid_fixture_name(name) => {
                    let data = read_capped(&mut entry, &path, MAX_FIXTURE_BYTES)?;
                    if fixtures.insert(name.to_owned(), data).is_some() {
                        return Err(malformed(format!("entry `{path}` appears twice")));
                    }
                    if fixtures.len() > MAX_FIXTURES {
                        return Err(malformed(format!("more than {MAX_FIXTURES} fixtures")));
                    }
                    continue;
                }
                _ => return Err(malformed(format!("unexpected entry `{other}`"))),
            },
        };
        if slot.is_some() {
            return Err(malformed(format!("entry `{path}` appears twice")));
        }
        *slot = Some(read_capped(&mut entry, &path, cap)?);
    }
    Ok(Entries {
        manifest: manifest.ok_or_else(|| malformed(format!("no `{MANIFEST_ENTRY}`")))?,
        signature,
        component: component.ok_or_else(|| malformed(format!("no `{COMPONENT_ENTRY}`")))?,
        fixtures,
    })
}

fn read_capped(entry: &mut impl Read, path: &str, cap: u64) -> Result<Vec<u8>, BundleError> {
    let mut data = Vec::new();
    entry
        .take(cap.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| malformed(format!("cannot read entry `{path}`: {e}")))?;
    if data.len() as u64 > cap {
        return Err(malformed(format!("entry `{path}` is larger than {cap} bytes")));
    }
    Ok(data)
}

/// The signature document of a bundle, unverified (for `arbiter plugin
/// verify`, which must know which publisher the bundle claims).
pub fn claimed_signature(bytes: &[u8], max_bytes: usize) -> Result<SignatureDoc, BundleError> {
    let entries = read_entries(bytes, max_bytes)?;
    parse_signature(entries.signature.as_deref())
}

fn parse_signature(bytes: Option<&[u8]>) -> Result<SignatureDoc, BundleError> {
    let bytes = bytes.ok_or(BundleError::Unsigned)?;
    let doc: SignatureDoc =
        serde_json::from_slice(bytes).map_err(|e| malformed(format!("`{SIGNATURE_ENTRY}` is invalid: {e}")))?;
    if doc.algorithm != "Ed25519" {
        return Err(malformed(format!("signature algorithm `{}` is not Ed25519", doc.algorithm)));
    }
    Ok(doc)
}

/// Check a bundle: size, structure, signature by a trusted publisher,
/// manifest fields, and the hash of every file. See the module doc for the
/// order of the checks.
pub fn open(bytes: &[u8], max_bytes: usize, trust: &Trust) -> Result<Bundle, BundleError> {
    let entries = read_entries(bytes, max_bytes)?;
    let signature = parse_signature(entries.signature.as_deref())?;
    let manifest_value: Value = serde_json::from_slice(&entries.manifest)
        .map_err(|e| malformed(format!("`{MANIFEST_ENTRY}` is not JSON: {e}")))?;
    let digest = bundle_digest(&manifest_value)?;
    if digest != signature.digest {
        return Err(BundleError::TamperedManifest { signed: signature.digest, actual: digest });
    }
    let key = trust
        .publishers
        .get(&signature.publisher)
        .ok_or_else(|| BundleError::UnknownPublisher(signature.publisher.clone()))?;
    let trusted = key_id(key);
    if trusted != signature.key_id {
        return Err(BundleError::WrongKey { publisher: signature.publisher, signed: signature.key_id, trusted });
    }
    let bad = || BundleError::BadSignature(signature.publisher.clone());
    let raw = base64::engine::general_purpose::STANDARD.decode(&signature.value).map_err(|_| bad())?;
    let raw: [u8; 64] = raw.try_into().map_err(|_| bad())?;
    key.verify(&signed_message(&digest), &Signature::from_bytes(&raw)).map_err(|_| bad())?;

    let manifest: Manifest =
        serde_json::from_value(manifest_value).map_err(|e| malformed(format!("invalid manifest: {e}")))?;
    manifest.check().map_err(|e| malformed(format!("invalid manifest: {e}")))?;
    check_file("component", &manifest.component.sha256, manifest.component.size, &entries.component)?;
    let mut fixtures = Vec::with_capacity(manifest.fixtures.len());
    let mut stored = entries.fixtures;
    for f in &manifest.fixtures {
        let data = stored.remove(&f.name).ok_or_else(|| malformed(format!("fixture `{}` is missing", f.name)))?;
        check_file(&format!("fixture `{}`", f.name), &f.sha256, f.size, &data)?;
        fixtures.push((f.name.clone(), data));
    }
    if let Some(extra) = stored.keys().next() {
        return Err(malformed(format!("fixture `{extra}` is not in the manifest")));
    }
    Ok(Bundle {
        manifest,
        digest,
        publisher: signature.publisher,
        key_id: trusted,
        component: entries.component,
        fixtures,
    })
}

fn check_file(what: &str, signed: &str, signed_size: u64, data: &[u8]) -> Result<(), BundleError> {
    let actual = hex::encode(Sha256::digest(data));
    let size = data.len() as u64;
    if actual != signed || size != signed_size {
        return Err(BundleError::TamperedFile {
            what: what.to_owned(),
            signed: signed.to_owned(),
            signed_size,
            actual,
            size,
        });
    }
    Ok(())
}

fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_fixture_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `MAJOR.MINOR.PATCH[-PRE][+BUILD]` with numeric core parts.
fn valid_version(version: &str) -> bool {
    let core = version_core(version);
    let parts: Vec<&str> = core.split('-').next().unwrap_or_default().split('.').collect();
    version.len() <= 64
        && parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b))
}

/// A version without its `+BUILD` metadata, which semver ignores.
pub fn version_core(version: &str) -> &str {
    version.split('+').next().unwrap_or(version)
}

fn valid_sha256(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Manifest {
    /// Check every field's form (not whether the host supports the WIT
    /// version or grants the capabilities: that is the host's call).
    pub fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!("`format` is `{}`, expected `{FORMAT}`", self.format));
        }
        if !valid_name(&self.name, 64) {
            return Err(format!("`name` `{}` must be 1 to 64 of [A-Za-z0-9_-]", self.name));
        }
        if !valid_version(&self.version) {
            return Err(format!(
                "`version` `{}` is not a semantic version MAJOR.MINOR.PATCH[-PRE][+BUILD]",
                self.version
            ));
        }
        if self.vendor.trim().is_empty() || self.vendor.len() > 128 {
            return Err("`vendor` must be 1 to 128 bytes".to_owned());
        }
        if self.wit.is_empty() || self.wit.len() > 64 {
            return Err("`wit` must be 1 to 64 bytes".to_owned());
        }
        if self.integrations.len() > MAX_LIST || !self.integrations.iter().all(|i| valid_name(i, 64)) {
            return Err(format!("`integrations` must be at most {MAX_LIST} names of [A-Za-z0-9_-]"));
        }
        let named = |c: &Value| c.get("name").and_then(Value::as_str).is_some_and(|n| valid_name(n, 64));
        if self.capabilities.len() > MAX_LIST || !self.capabilities.iter().all(named) {
            return Err(format!("`capabilities` must be at most {MAX_LIST} objects, each with a `name`"));
        }
        if !valid_sha256(&self.component.sha256) {
            return Err("`component.sha256` must be 64 lower-case hex digits".to_owned());
        }
        if self.fixtures.is_empty() || self.fixtures.len() > MAX_FIXTURES {
            return Err(format!("`fixtures` must list 1 to {MAX_FIXTURES} self-test fixtures"));
        }
        let mut seen = BTreeSet::new();
        for f in &self.fixtures {
            if !valid_fixture_name(&f.name) || !seen.insert(f.name.as_str()) {
                return Err(format!("fixture name `{}` is invalid or repeated", f.name));
            }
            if !valid_sha256(&f.sha256) {
                return Err(format!("fixture `{}`: `sha256` must be 64 lower-case hex digits", f.name));
            }
        }
        Ok(())
    }

    /// Names of the capabilities asked for.
    pub fn capability_names(&self) -> Vec<&str> {
        self.capabilities.iter().filter_map(|c| c.get("name").and_then(Value::as_str)).collect()
    }
}

/// Build and sign a bundle from a publisher's source manifest, the
/// component and the fixtures (name, bytes) in the source's order.
pub fn sign(
    source: &SourceManifest,
    component: &[u8],
    fixtures: &[(String, Vec<u8>)],
    publisher: &str,
    key: &SigningKey,
) -> Result<Vec<u8>, BundleError> {
    for (name, data) in fixtures {
        serde_json::from_slice::<Fixture>(data).map_err(|e| malformed(format!("fixture `{name}` is invalid: {e}")))?;
    }
    let file = |data: &[u8]| (hex::encode(Sha256::digest(data)), data.len() as u64);
    let (sha256, size) = file(component);
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        name: source.name.clone(),
        version: source.version.clone(),
        vendor: source.vendor.clone(),
        wit: source.wit.clone(),
        integrations: source.integrations.clone(),
        capabilities: source.capabilities.clone(),
        component: FileRef { sha256, size },
        fixtures: fixtures
            .iter()
            .map(|(name, data)| {
                let (sha256, size) = file(data);
                FixtureRef { name: name.clone(), sha256, size }
            })
            .collect(),
    };
    manifest.check().map_err(|e| malformed(format!("invalid manifest: {e}")))?;
    if !valid_name(publisher, 64) {
        return Err(malformed(format!("publisher `{publisher}` must be 1 to 64 of [A-Za-z0-9_-]")));
    }
    let value = serde_json::to_value(&manifest).map_err(|e| malformed(e.to_string()))?;
    let canonical = serde_jcs::to_vec(&value).map_err(|e| malformed(e.to_string()))?;
    let digest = bundle_digest(&value)?;
    let signature = SignatureDoc {
        algorithm: "Ed25519".to_owned(),
        publisher: publisher.to_owned(),
        key_id: key_id(&key.verifying_key()),
        value: base64::engine::general_purpose::STANDARD.encode(key.sign(&signed_message(&digest)).to_bytes()),
        digest,
    };
    let signature = serde_json::to_vec(&signature).map_err(|e| malformed(e.to_string()))?;
    let mut entries: Vec<(String, &[u8])> = vec![
        (MANIFEST_ENTRY.to_owned(), &canonical),
        (SIGNATURE_ENTRY.to_owned(), &signature),
        (COMPONENT_ENTRY.to_owned(), component),
    ];
    entries.extend(fixtures.iter().map(|(name, data)| (format!("{FIXTURE_PREFIX}{name}"), data.as_slice())));
    write_archive(&entries)
}

/// A deterministic ustar archive: fixed order, mode 0644, owner 0, time 0.
pub fn write_archive(entries: &[(String, &[u8])]) -> Result<Vec<u8>, BundleError> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *data)
            .map_err(|e| malformed(format!("cannot write entry `{path}`: {e}")))?;
    }
    builder.into_inner().map_err(|e| malformed(format!("cannot finish the archive: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;

    const LIMIT: usize = 1024 * 1024;
    const FIXTURE: &str = r#"{"request": {"body": {"a": 1}}, "decode": {"result": "malformed"}}"#;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn source() -> SourceManifest {
        serde_json::from_value(serde_json::json!({
            "name": "demo", "version": "1.2.3+build.7", "vendor": "Demo", "wit": "arbiter:plugin@0.1.0",
            "integrations": ["demo"], "fixtures": ["fixtures/a.json"],
        }))
        .unwrap()
    }

    fn signed() -> Vec<u8> {
        let fixtures = vec![("a.json".to_owned(), FIXTURE.as_bytes().to_vec())];
        sign(&source(), b"\0asm-component-bytes", &fixtures, "acme", &key(1)).unwrap()
    }

    fn trust() -> Trust {
        let mut t = Trust::default();
        t.add("acme", key(1).verifying_key());
        t
    }

    /// The archive's entries, to rebuild it altered.
    fn entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_str().unwrap().to_owned();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, data)
            })
            .collect()
    }

    fn rebuild(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let refs: Vec<(String, &[u8])> = entries.iter().map(|(p, d)| (p.clone(), d.as_slice())).collect();
        write_archive(&refs).unwrap()
    }

    fn alter(bytes: &[u8], path: &str, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut e = entries(bytes);
        f(&mut e.iter_mut().find(|(p, _)| p == path).unwrap().1);
        rebuild(&e)
    }

    #[test]
    // A signed bundle opens, and its digest is SHA-256 over the JCS bytes
    // of the manifest, which is stored canonical.
    fn signed_bundle_round_trips_with_a_canonical_digest() {
        let bytes = signed();
        let bundle = open(&bytes, LIMIT, &trust()).unwrap();
        assert_eq!(bundle.manifest.name, "demo");
        assert_eq!(bundle.publisher, "acme");
        assert_eq!(bundle.component, b"\0asm-component-bytes");
        assert_eq!(bundle.fixtures, vec![("a.json".to_owned(), FIXTURE.as_bytes().to_vec())]);
        let e = entries(&bytes);
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["manifest.json", "signature.json", "component.wasm", "fixtures/a.json"]);
        let manifest = &e[0].1;
        let value: Value = serde_json::from_slice(manifest).unwrap();
        assert_eq!(&serde_jcs::to_vec(&value).unwrap(), manifest, "manifest is stored as JCS");
        assert_eq!(bundle.digest, format!("sha256:{}", hex::encode(Sha256::digest(manifest))));
        assert_eq!(value["component"]["sha256"], hex::encode(Sha256::digest(b"\0asm-component-bytes")));
        assert_eq!(value["fixtures"][0]["sha256"], hex::encode(Sha256::digest(FIXTURE.as_bytes())));
        // The signature is over the context string and the digest, not the
        // bare digest.
        let sig: SignatureDoc = serde_json::from_slice(&e[1].1).unwrap();
        let raw: [u8; 64] = base64::engine::general_purpose::STANDARD.decode(&sig.value).unwrap().try_into().unwrap();
        let vk = key(1).verifying_key();
        let message = format!("arbiter-bundle-v1:{}", bundle.digest);
        assert!(vk.verify(message.as_bytes(), &Signature::from_bytes(&raw)).is_ok());
        assert!(vk.verify(bundle.digest.as_bytes(), &Signature::from_bytes(&raw)).is_err());
        // Signing is deterministic.
        assert_eq!(signed(), bytes);
    }

    #[test]
    // A bundle without `signature.json` is refused as unsigned.
    fn unsigned_is_refused() {
        let e: Vec<_> = entries(&signed()).into_iter().filter(|(p, _)| p != "signature.json").collect();
        let err = open(&rebuild(&e), LIMIT, &trust()).unwrap_err();
        assert!(matches!(err, BundleError::Unsigned), "{err}");
        assert_eq!(err.code(), "bundle_unsigned");
    }

    #[test]
    // A publisher that is not trusted is named in the refusal.
    fn unknown_publisher_is_refused() {
        let mut t = Trust::default();
        t.add("other", key(1).verifying_key());
        let err = open(&signed(), LIMIT, &t).unwrap_err();
        assert!(matches!(&err, BundleError::UnknownPublisher(p) if p == "acme"), "{err}");
    }

    #[test]
    // A trusted name with another key, and a flipped signature byte, are
    // both bad signatures.
    fn wrong_key_and_bad_signature_are_refused() {
        let mut t = Trust::default();
        t.add("acme", key(2).verifying_key());
        let err = open(&signed(), LIMIT, &t).unwrap_err();
        assert!(matches!(err, BundleError::WrongKey { .. }), "{err}");
        assert_eq!(err.code(), "bad_signature");

        let forged = alter(&signed(), "signature.json", |d| {
            let mut sig: SignatureDoc = serde_json::from_slice(d).unwrap();
            let mut raw = base64::engine::general_purpose::STANDARD.decode(&sig.value).unwrap();
            raw[0] ^= 1;
            sig.value = base64::engine::general_purpose::STANDARD.encode(raw);
            *d = serde_json::to_vec(&sig).unwrap();
        });
        let err = open(&forged, LIMIT, &trust()).unwrap_err();
        assert!(matches!(err, BundleError::BadSignature(_)), "{err}");
    }

    #[test]
    // A manifest changed after signing no longer has the signed digest,
    // even when the change is only a field's value.
    fn tampered_manifest_is_refused() {
        let bytes = alter(&signed(), "manifest.json", |d| {
            let mut v: Value = serde_json::from_slice(d).unwrap();
            v["version"] = Value::from("9.9.9");
            *d = serde_jcs::to_vec(&v).unwrap();
        });
        let err = open(&bytes, LIMIT, &trust()).unwrap_err();
        assert!(matches!(err, BundleError::TamperedManifest { .. }), "{err}");
        // Re-formatting alone (whitespace, key order) is not tampering.
        let bytes = alter(&signed(), "manifest.json", |d| {
            let v: Value = serde_json::from_slice(d).unwrap();
            *d = serde_json::to_vec_pretty(&v).unwrap();
        });
        assert!(open(&bytes, LIMIT, &trust()).is_ok());
    }

    #[test]
    // A component or fixture changed after signing is refused by name.
    fn tampered_files_are_refused() {
        let bytes = alter(&signed(), "component.wasm", |d| d.push(0));
        let err = open(&bytes, LIMIT, &trust()).unwrap_err();
        assert!(matches!(&err, BundleError::TamperedFile { what, .. } if what == "component"), "{err}");
        assert_eq!(err.code(), "tampered_file");
        let bytes = alter(&signed(), "fixtures/a.json", |d| d[0] = b' ');
        let err = open(&bytes, LIMIT, &trust()).unwrap_err();
        assert!(matches!(&err, BundleError::TamperedFile { what, .. } if what.contains("a.json")), "{err}");
    }

    #[test]
    // Extra, duplicate or missing entries, garbage and oversize input are
    // malformed or too large.
    fn malformed_archives_are_refused() {
        let mut e = entries(&signed());
        e.push(("README".to_owned(), b"hi".to_vec()));
        assert!(matches!(open(&rebuild(&e), LIMIT, &trust()), Err(BundleError::Malformed(m)) if m.contains("README")));
        let mut e = entries(&signed());
        e.push(("fixtures/b.json".to_owned(), FIXTURE.as_bytes().to_vec()));
        assert!(matches!(open(&rebuild(&e), LIMIT, &trust()), Err(BundleError::Malformed(m)) if m.contains("b.json")));
        let mut e = entries(&signed());
        e.push(e[2].clone());
        assert!(matches!(open(&rebuild(&e), LIMIT, &trust()), Err(BundleError::Malformed(m)) if m.contains("twice")));
        let e: Vec<_> = entries(&signed()).into_iter().filter(|(p, _)| p != "component.wasm").collect();
        assert!(matches!(open(&rebuild(&e), LIMIT, &trust()), Err(BundleError::Malformed(_))));
        assert!(matches!(open(b"not a tar archive at all", LIMIT, &trust()), Err(BundleError::Malformed(_))));
        assert!(matches!(open(&signed(), 100, &trust()), Err(BundleError::TooLarge { limit: 100, .. })));
    }

    #[test]
    // The manifest's fields are checked: name, version, fixtures,
    // capabilities.
    fn manifest_fields_are_checked() {
        let ok = open(&signed(), LIMIT, &trust()).unwrap().manifest;
        assert!(ok.check().is_ok());
        let bad = |f: &dyn Fn(&mut Manifest)| {
            let mut m = ok.clone();
            f(&mut m);
            m.check().unwrap_err()
        };
        assert!(bad(&|m| m.name = "has space".to_owned()).contains("name"));
        assert!(bad(&|m| m.version = "1.2".to_owned()).contains("version"));
        assert!(bad(&|m| m.version = "1.x.3".to_owned()).contains("version"));
        assert!(bad(&|m| m.fixtures.clear()).contains("fixtures"));
        assert!(bad(&|m| m.format = "other/v9".to_owned()).contains("format"));
        assert!(bad(&|m| m.capabilities = vec![serde_json::json!({"hosts": []})]).contains("capabilities"));
        assert_eq!(version_core("1.2.3-rc.1+build.7"), "1.2.3-rc.1");
        // Unknown manifest members are refused.
        let mut v = serde_json::to_value(&ok).unwrap();
        v["surprise"] = Value::Bool(true);
        assert!(serde_json::from_value::<Manifest>(v).is_err());
    }

    #[test]
    // `sign` refuses fixtures that are not fixtures.
    fn sign_checks_fixtures() {
        let fixtures = vec![("a.json".to_owned(), b"{}".to_vec())];
        let err = sign(&source(), b"c", &fixtures, "acme", &key(1)).unwrap_err();
        assert!(matches!(err, BundleError::Malformed(m) if m.contains("a.json")));
    }

    #[test]
    // Public keys parse from base64 of 32 bytes only.
    fn public_keys_parse() {
        let vk = key(3).verifying_key();
        let text = base64::engine::general_purpose::STANDARD.encode(vk.as_bytes());
        assert_eq!(parse_public_key(&text).unwrap(), vk);
        assert!(parse_public_key("AAAA").is_err());
        assert!(parse_public_key("not base64!").is_err());
    }
}
