//! Policy decision point: a Cedar policy pack plus its detectors.
//!
//! A pack is a directory: `pack.toml` (name, version, default posture),
//! `*.cedar` policies annotated with `@id`, `@classification`, `@reason`,
//! `@decision`, and `detectors.toml` (named regexes whose matches become
//! `context.signals` and `context.data_classes`). Cedar has no regular
//! expressions, so detectors do the string work and policies stay
//! declarative.
//!
//! Decisions are values, never errors: [`Pdp::decide`] always returns a
//! [`PolicyOutcome`]. A Cedar evaluation error yields DENY (fail closed) with
//! the error in the reason, because a skipped `forbid` must never let an
//! action through.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer, Context, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid, EvaluationError, PolicyId,
    PolicySet, Request, RestrictedExpression,
};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::classify::Classifier;
use crate::context::SessionSummary;
use crate::model::{CanonicalAction, Decision, Fault, FaultComponent, FaultKind};

/// The bundled default pack, compiled into the binary.
static BASELINE: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/../policies/baseline");

/// Id recorded when no policy matched and the default posture decided.
pub const DEFAULT_POLICY_ID: &str = "arbiter.default";

/// The four AARM action classes, as written in `@classification`.
pub const CLASSIFICATIONS: [&str; 4] =
    ["forbidden", "context_dependent_deny", "context_dependent_allow", "context_dependent_defer"];

/// Longest target a mapped MCP tool takes from its parameters (the
/// canonical action's `resource` limit); a longer one is no target, never a
/// clipped one that could match a different policy.
const MAX_TARGET_LEN: usize = 4096;

/// Deepest parameter nesting converted into the Cedar context.
const MAX_DEPTH: usize = 32;

/// Decision when no policy matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Posture {
    /// Allow unmatched actions (recorded under [`DEFAULT_POLICY_ID`]).
    Allow,
    /// Deny unmatched actions.
    Deny,
}

/// Errors raised while loading a pack. Loading fails as a whole: a pack with
/// one bad policy is never half-loaded.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `pack.toml` or `detectors.toml` is invalid.
    #[error("invalid `{file}`: {reason}")]
    Manifest {
        /// The file.
        file: String,
        /// The problem.
        reason: String,
    },
    /// A Cedar file does not parse.
    #[error("cannot parse `{file}`: {reason}")]
    Cedar {
        /// The file.
        file: String,
        /// The parser's message.
        reason: String,
    },
    /// A policy breaks the pack's annotation rules.
    #[error("policy in `{file}`: {reason}")]
    Annotation {
        /// The file.
        file: String,
        /// The problem.
        reason: String,
    },
    /// A detector's pattern does not compile.
    #[error("detector `{id}`: invalid pattern: {reason}")]
    Pattern {
        /// The detector.
        id: String,
        /// The regex error.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackManifest {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_posture")]
    default_posture: Posture,
    #[serde(default)]
    alignment: AlignmentConfig,
    #[serde(default)]
    risk: RiskConfig,
    #[serde(default)]
    mcp_tools: BTreeMap<String, McpTool>,
    #[serde(default)]
    evidence: BTreeMap<String, EvidenceResolver>,
}

/// `[evidence.<name>]` in `pack.toml`: where the deferral service asks for
/// the evidence `context.evidence.<name>` when an action is deferred for the
/// lack of it. Arbiter POSTs `{"question": "<name>", "deferral_id",
/// "session", "action": {"tool", "operation", "target"}}` and expects
/// `{"value": "<string>"}` within `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceResolver {
    /// `http://` or `https://` endpoint.
    pub url: String,
    /// Per-question timeout in milliseconds (1 .. 10 000). Default = 2000.
    #[serde(default = "default_resolver_timeout")]
    pub timeout_ms: u64,
}

fn default_resolver_timeout() -> u64 {
    2000
}

/// `[mcp_tools."mcp://<server>/<tool>"]` in `pack.toml`: an MCP tool that is
/// one of the pack's own actions. Adapters canonicalise every MCP tool as
/// `mcp.call` on `mcp://<server>/<tool>` (Claude Code's
/// `mcp__<server>__<tool>`); listed here it is decided, recorded and
/// validated as `action`, with the parameter named by `resource` as its
/// target. The original tool name stays in the action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpTool {
    /// `tool.operation`, e.g. `email.send`.
    pub action: String,
    /// Parameter whose string value becomes the target (e.g. `to`).
    #[serde(default)]
    pub resource: Option<String>,
}

impl McpTool {
    fn check(key: &str, t: &McpTool) -> Result<(), String> {
        let part = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        };
        let Some(rest) = key.strip_prefix("mcp://") else {
            return Err(format!("`{key}` does not start with `mcp://`"));
        };
        if !rest.split_once('/').is_some_and(|(server, tool)| !server.is_empty() && !tool.is_empty()) {
            return Err(format!("`{key}` is not `mcp://<server>/<tool>`"));
        }
        match t.action.split_once('.') {
            Some((tool, op)) if part(tool) && part(op) && tool != "mcp" => Ok(()),
            _ => Err(format!("`{key}`: action `{}` is not `tool.operation` (lower case, not `mcp`)", t.action)),
        }
    }
}

/// `[alignment]` in `pack.toml`: how intent alignment and drift take part in
/// decisions (AARM step 5). Scores are in [0, 1].
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlignmentConfig {
    /// τ: an action scoring below it is misaligned. `None` (the default)
    /// turns the step-5 overrides off: a lexical score is a signal, and a
    /// pack opts in to letting it change decisions.
    pub tau: Option<f64>,
    /// Session drift at or above which an action that would be allowed is
    /// escalated to STEP_UP. `None` = off.
    pub drift_alert: Option<f64>,
    /// Minimum alignment confidence for a decision made by a
    /// `context_dependent_*` policy; below it the action is DEFERred (AARM's
    /// third mandatory trigger). Default = 0 (off).
    pub min_confidence: f64,
}

/// `[risk]` in `pack.toml`: compositional risk (AARM step 2).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Deny external egress once the session holds private data and has
    /// taken in untrusted content (the "private data + untrusted content +
    /// egress" combination). Default = true.
    pub trifecta: bool,
    /// Data classes that count as private. Default = SECRET, PII, CONFIDENTIAL.
    pub private_classes: Vec<String>,
    /// Detector signals that make an action count as egress besides the
    /// `egress` operation (e.g. a shell command that runs curl).
    pub egress_signals: Vec<String>,
    /// Session risk score (see [`session_risk`]) at or above which every
    /// further action is denied. `None` = off.
    pub max_score: Option<f64>,
    /// The pack's data classes from lowest to highest. Data of unknown class
    /// (the built-in classifier could not tell: too large, too deep) counts
    /// as the last, as AARM asks. Default = PUBLIC, CONFIDENTIAL, PII, SECRET.
    pub class_order: Vec<String>,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            trifecta: true,
            private_classes: vec!["SECRET".to_owned(), "PII".to_owned(), "CONFIDENTIAL".to_owned()],
            egress_signals: Vec::new(),
            max_score: None,
            class_order: ["PUBLIC", "CONFIDENTIAL", "PII", "SECRET"].map(str::to_owned).to_vec(),
        }
    }
}

/// Session risk in [0, 1], additive over what the session has done: 0.3
/// once private data was touched, 0.2 once untrusted content entered, 0.1
/// per denied action (at most 0.3), 0.05 per egress (at most 0.2).
pub fn session_risk(session: &SessionSummary, private: &[String]) -> f64 {
    let mut risk = 0.0;
    if session.data_classes.iter().any(|c| private.contains(c)) {
        risk += 0.3;
    }
    if session.untrusted_input {
        risk += 0.2;
    }
    risk += (0.1 * session.denied as f64).min(0.3);
    risk += (0.05 * session.egress as f64).min(0.2);
    f64::min(risk, 1.0)
}

fn default_posture() -> Posture {
    Posture::Allow
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorFile {
    #[serde(default)]
    detector: Vec<DetectorSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectorSpec {
    id: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    actions: Option<Vec<String>>,
    fields: Vec<String>,
    pattern: String,
    #[serde(default)]
    class: Option<String>,
}

#[derive(Debug)]
struct Detector {
    id: String,
    actions: Option<BTreeSet<String>>,
    fields: Vec<String>,
    pattern: Regex,
    class: Option<String>,
}

/// What the pack says about one policy, from its annotations.
#[derive(Debug, Clone)]
struct PolicyMeta {
    classification: Option<String>,
    reason: Option<String>,
    /// `@decision`, or the effect's (permit → ALLOW, forbid → DENY).
    decision: Decision,
    /// `@priority`; higher wins in the baseline step. Default 0.
    priority: i64,
    /// `@approvers`, comma-separated groups, for STEP_UP.
    approvers: Vec<String>,
    /// `@modify_*` transforms, for MODIFY.
    transforms: Vec<Transform>,
    /// `@min_confidence`: DEFER when the alignment confidence is lower.
    min_confidence: Option<f64>,
    /// `@aligned_decision` of a `context_dependent_allow` policy: what an
    /// aligned action gets instead of DENY. Default STEP_UP.
    aligned_decision: Decision,
    /// `@deadline_secs`: how long the approval or deferral this policy's
    /// STEP_UP / DEFER creates stays open (default: the service's config).
    deadline_secs: Option<u64>,
    /// `@approval_uses`: identical actions one approval lets through
    /// (default: `approvals.max_uses`).
    approval_uses: Option<u32>,
    /// The signal the policy's first condition tests first, when it starts
    /// `when { context.signals.contains("X") ...`: Cedar evaluates that
    /// conjunct first and stops when it is false, so without signal X the
    /// policy can neither apply nor raise an error, and is not evaluated.
    gate: Option<String>,
}

/// The signal gating a policy (see [`PolicyMeta::gate`]), read from Cedar's
/// JSON form; `None` for any other shape, which keeps the policy always
/// evaluated.
fn signal_gate(policy: &cedar_policy::Policy) -> Option<String> {
    let json = policy.to_json().ok()?;
    let first = json.get("conditions")?.get(0)?;
    if first.get("kind")?.as_str()? != "when" {
        return None;
    }
    let mut body = first.get("body")?;
    while let Some(and) = body.get("&&") {
        body = and.get("left")?;
    }
    let contains = body.get("contains")?;
    let left = contains.get("left")?.get(".")?;
    let is_signals = left.get("left")?.get("Var")?.as_str()? == "context" && left.get("attr")?.as_str()? == "signals";
    let value = contains.get("right")?.get("Value")?.as_str()?;
    is_signals.then(|| value.to_owned())
}

/// One MODIFY transform on a parameter (a dotted path below `parameters`).
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// `@modify_redact("a,b.c")`: replace the value with `[REDACTED]`.
    Redact(String),
    /// `@modify_clamp("limit=1..1000")`: clamp a number into the range.
    Clamp(String, i64, i64),
    /// `@modify_replace("branch=safe")`: set the value to a string.
    Replace(String, String),
    /// `@modify_drop("force")`: remove the field.
    Drop(String),
}

impl Transform {
    fn parse_all(policy: &cedar_policy::Policy) -> Result<Vec<Self>, String> {
        let items = |key: &str| -> Vec<String> {
            policy
                .annotation(key)
                .map(|v| v.split(',').map(|i| i.trim().to_owned()).filter(|i| !i.is_empty()).collect())
                .unwrap_or_default()
        };
        let mut out = Vec::new();
        out.extend(items("modify_redact").into_iter().map(Self::Redact));
        out.extend(items("modify_drop").into_iter().map(Self::Drop));
        for item in items("modify_replace") {
            let (path, value) =
                item.split_once('=').ok_or(format!("`@modify_replace(\"{item}\")` needs path=value"))?;
            out.push(Self::Replace(path.trim().to_owned(), value.trim().to_owned()));
        }
        for item in items("modify_clamp") {
            let bad = || format!("`@modify_clamp(\"{item}\")` needs path=MIN..MAX with integers");
            let (path, range) = item.split_once('=').ok_or_else(bad)?;
            let (lo, hi) = range.split_once("..").ok_or_else(bad)?;
            let lo: i64 = lo.trim().parse().map_err(|_| bad())?;
            let hi: i64 = hi.trim().parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(bad());
            }
            out.push(Self::Clamp(path.trim().to_owned(), lo, hi));
        }
        Ok(out)
    }

    /// Apply to `params`. A transform whose field is absent changes nothing.
    fn apply(&self, params: &mut Map<String, Value>) {
        let path = match self {
            Self::Redact(p) | Self::Clamp(p, ..) | Self::Replace(p, _) | Self::Drop(p) => p,
        };
        let mut parts: Vec<&str> = path.split('.').collect();
        let Some(last) = parts.pop() else { return };
        let mut obj = params;
        for part in parts {
            match obj.get_mut(part) {
                Some(Value::Object(inner)) => obj = inner,
                _ => return,
            }
        }
        match self {
            Self::Drop(_) => {
                obj.remove(last);
            }
            Self::Redact(_) => {
                if let Some(v) = obj.get_mut(last) {
                    *v = Value::String("[REDACTED]".to_owned());
                }
            }
            Self::Replace(_, value) => {
                if let Some(v) = obj.get_mut(last) {
                    *v = Value::String(value.clone());
                }
            }
            Self::Clamp(_, lo, hi) => {
                if let Some(v) = obj.get_mut(last)
                    && let Some(n) = v.as_f64()
                {
                    *v = Value::from(n.clamp(*lo as f64, *hi as f64).round() as i64);
                }
            }
        }
    }
}

/// Identity of the policy set that made a decision, as receipts record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackIdentity {
    /// Pack name.
    pub pack: String,
    /// Pack version.
    pub version: String,
    /// `sha256:<hex>` over every file of the pack.
    pub hash: String,
}

/// A loaded, validated policy pack.
#[derive(Debug)]
pub struct PolicyPack {
    identity: PackIdentity,
    description: String,
    default_posture: Posture,
    alignment: AlignmentConfig,
    risk: RiskConfig,
    /// Forbids and permits apart: Cedar's deny-overrides would hide the
    /// satisfied permits behind a satisfied forbid, and the AARM steps need
    /// every applicable policy.
    forbids: PolicySet,
    permits: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
    detectors: Vec<Detector>,
    /// Parameter schemas by `tool.operation` (`schemas/<tool>.<operation>.json`).
    schemas: HashMap<String, ParamSchema>,
    /// Cedar validator warnings (the policies loaded; these are advice).
    warnings: Vec<String>,
    has_schema: bool,
    files: Vec<(String, Vec<u8>)>,
    /// Every signal that gates some policy.
    gates: BTreeSet<String>,
    /// MCP tools decided as the pack's own actions, by `mcp://server/tool`.
    mcp_tools: BTreeMap<String, McpTool>,
    /// Evidence resolvers by evidence name.
    evidence: BTreeMap<String, EvidenceResolver>,
}

/// The pack's Cedar schema file.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// Validate every policy against the pack's Cedar schema in strict mode.
/// Errors refuse the pack; warnings are returned.
fn validate_against_schema(src: &str, sets: &[&PolicySet]) -> Result<Vec<String>, PackError> {
    let err = |reason: String| PackError::Cedar { file: SCHEMA_FILE.to_owned(), reason };
    let (schema, schema_warnings) =
        cedar_policy::Schema::from_cedarschema_str(src).map_err(|e| err(format!("{e:?}")))?;
    let mut warnings: Vec<String> = schema_warnings.map(|w| w.to_string()).collect();
    let validator = cedar_policy::Validator::new(schema);
    for set in sets {
        let result = validator.validate(set, cedar_policy::ValidationMode::Strict);
        let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            return Err(PackError::Annotation {
                file: SCHEMA_FILE.to_owned(),
                reason: format!("policies do not validate against the schema: {}", errors.join("; ")),
            });
        }
        warnings.extend(result.validation_warnings().map(|w| w.to_string()));
    }
    Ok(warnings)
}

/// A parameter schema and how the pack repairs a violation, if it does.
struct ParamSchema {
    validator: jsonschema::Validator,
    /// `x-arbiter-repair` in the schema: transforms that make a violating
    /// action acceptable as MODIFY when the repaired parameters validate.
    repair: Vec<Transform>,
}

impl std::fmt::Debug for ParamSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamSchema").field("repair", &self.repair).finish_non_exhaustive()
    }
}

impl PolicyPack {
    /// The bundled `policies/baseline` pack.
    pub fn bundled() -> Result<Self, PackError> {
        let mut files = Vec::new();
        collect_embedded(&BASELINE, &mut files);
        Self::from_files(files)
    }

    /// Load a pack directory.
    pub fn load(dir: &Path) -> Result<Self, PackError> {
        let mut files = Vec::new();
        collect_dir(dir, dir, &mut files)?;
        Self::from_files(files)
    }

    /// Build a pack from `(relative path, bytes)` pairs.
    pub fn from_files(mut files: Vec<(String, Vec<u8>)>) -> Result<Self, PackError> {
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256::new();
        for (path, bytes) in &files {
            hasher.update(path.as_bytes());
            hasher.update([0u8]);
            hasher.update(bytes);
            hasher.update([0u8]);
        }
        let hash = format!("sha256:{}", hex::encode(hasher.finalize()));

        let text = |path: &str, bytes: &[u8]| {
            String::from_utf8(bytes.to_vec())
                .map_err(|_| PackError::Manifest { file: path.to_owned(), reason: "not UTF-8".to_owned() })
        };
        let manifest_bytes = files
            .iter()
            .find(|(p, _)| p == "pack.toml")
            .ok_or_else(|| PackError::Manifest { file: "pack.toml".to_owned(), reason: "missing".to_owned() })?;
        let manifest: PackManifest = toml::from_str(&text("pack.toml", &manifest_bytes.1)?)
            .map_err(|e| PackError::Manifest { file: "pack.toml".to_owned(), reason: e.to_string() })?;
        for (name, resolver) in &manifest.evidence {
            let scheme_ok = resolver.url.starts_with("http://") || resolver.url.starts_with("https://");
            if !scheme_ok || !(1..=10_000).contains(&resolver.timeout_ms) {
                return Err(PackError::Manifest {
                    file: "pack.toml".to_owned(),
                    reason: format!("evidence `{name}`: url must be http(s) and timeout_ms 1..10000"),
                });
            }
        }
        for (key, tool) in &manifest.mcp_tools {
            McpTool::check(key, tool).map_err(|reason| PackError::Manifest {
                file: "pack.toml".to_owned(),
                reason: format!("mcp_tools: {reason}"),
            })?;
        }

        let mut forbids = PolicySet::new();
        let mut permits = PolicySet::new();
        let mut meta = HashMap::new();
        for (path, bytes) in files.iter().filter(|(p, _)| p.ends_with(".cedar") && !p.contains('/')) {
            let src = text(path, bytes)?;
            let parsed = PolicySet::from_str(&src)
                .map_err(|e| PackError::Cedar { file: path.clone(), reason: format!("{e:?}") })?;
            if parsed.templates().next().is_some() {
                return Err(PackError::Annotation {
                    file: path.clone(),
                    reason: "templates are not supported in packs".to_owned(),
                });
            }
            for policy in parsed.policies() {
                let annotation_err = |reason: String| PackError::Annotation { file: path.clone(), reason };
                let id = policy
                    .annotation("id")
                    .ok_or_else(|| annotation_err(format!("a policy has no `@id`: {}", first_line(policy))))?;
                if id.is_empty() || id == DEFAULT_POLICY_ID {
                    return Err(annotation_err(format!("`@id(\"{id}\")` is reserved or empty")));
                }
                let classification = policy.annotation("classification").map(str::to_owned);
                if let Some(c) = &classification
                    && !CLASSIFICATIONS.contains(&c.as_str())
                {
                    return Err(annotation_err(format!(
                        "`{id}`: unknown `@classification(\"{c}\")`; use one of {CLASSIFICATIONS:?}"
                    )));
                }
                let decision = match policy.annotation("decision") {
                    None => match policy.effect() {
                        Effect::Forbid => Decision::Deny,
                        Effect::Permit => Decision::Allow,
                    },
                    Some(d) => {
                        let parsed = Decision::parse(d)
                            .ok_or_else(|| annotation_err(format!("`{id}`: unknown `@decision(\"{d}\")`")))?;
                        // A forbid may only block (DEFER and STEP_UP block too).
                        let consistent = match policy.effect() {
                            Effect::Forbid => !parsed.proceeds(),
                            Effect::Permit => parsed != Decision::Deny,
                        };
                        if !consistent {
                            return Err(annotation_err(format!(
                                "`{id}`: `@decision(\"{d}\")` contradicts the policy's effect"
                            )));
                        }
                        parsed
                    }
                };
                if classification.as_deref() == Some("forbidden") && policy.effect() != Effect::Forbid {
                    return Err(annotation_err(format!("`{id}`: a `forbidden` policy must be a forbid")));
                }
                let priority = match policy.annotation("priority") {
                    None => 0,
                    Some(p) => p
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| annotation_err(format!("`{id}`: `@priority` must be an integer")))?,
                };
                let transforms = Transform::parse_all(policy).map_err(|e| annotation_err(format!("`{id}`: {e}")))?;
                if decision == Decision::Modify && transforms.is_empty() {
                    return Err(annotation_err(format!("`{id}`: a MODIFY policy needs a `@modify_*` transform")));
                }
                let min_confidence = match policy.annotation("min_confidence") {
                    None => None,
                    Some(c) => {
                        Some(c.trim().parse::<f64>().ok().filter(|c| (0.0..=1.0).contains(c)).ok_or_else(|| {
                            annotation_err(format!("`{id}`: `@min_confidence` must be a number in [0, 1]"))
                        })?)
                    }
                };
                let aligned_decision = match policy.annotation("aligned_decision") {
                    None => Decision::StepUp,
                    Some(d) => {
                        Decision::parse(d).filter(|d| matches!(d, Decision::StepUp | Decision::Allow)).ok_or_else(
                            || annotation_err(format!("`{id}`: `@aligned_decision` must be STEP_UP or ALLOW")),
                        )?
                    }
                };
                let deadline_secs =
                    match policy.annotation("deadline_secs") {
                        None => None,
                        Some(v) => Some(v.trim().parse::<u64>().ok().filter(|v| (1..=86_400).contains(v)).ok_or_else(
                            || annotation_err(format!("`{id}`: `@deadline_secs` must be 1 .. 86400 seconds")),
                        )?),
                    };
                let approval_uses = match policy.annotation("approval_uses") {
                    None => None,
                    Some(v) => Some(
                        v.trim()
                            .parse::<u32>()
                            .ok()
                            .filter(|v| (1..=1000).contains(v))
                            .ok_or_else(|| annotation_err(format!("`{id}`: `@approval_uses` must be 1 .. 1000")))?,
                    ),
                };
                let approvers = policy
                    .annotation("approvers")
                    .map(|a| a.split(',').map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()).collect())
                    .unwrap_or_default();

                let pid = PolicyId::new(id);
                if meta.contains_key(&pid) {
                    return Err(annotation_err(format!("duplicate `@id(\"{id}\")`")));
                }
                let effect = policy.effect();
                meta.insert(
                    pid.clone(),
                    PolicyMeta {
                        classification,
                        reason: policy.annotation("reason").map(str::to_owned),
                        decision,
                        priority,
                        approvers,
                        transforms,
                        min_confidence,
                        aligned_decision,
                        deadline_secs,
                        approval_uses,
                        gate: signal_gate(policy),
                    },
                );
                let set = if effect == Effect::Forbid { &mut forbids } else { &mut permits };
                set.add(policy.new_id(pid)).map_err(|e| annotation_err(format!("`{id}`: {e}")))?;
            }
        }
        let mut warnings = Vec::new();
        if let Some((_, bytes)) = files.iter().find(|(p, _)| p == SCHEMA_FILE) {
            warnings = validate_against_schema(&text(SCHEMA_FILE, bytes)?, &[&forbids, &permits])?;
        }
        if meta.is_empty() {
            return Err(PackError::Manifest {
                file: "*.cedar".to_owned(),
                reason: "the pack has no policies".to_owned(),
            });
        }

        let mut detectors = Vec::new();
        if let Some((_, bytes)) = files.iter().find(|(p, _)| p == "detectors.toml") {
            let file: DetectorFile = toml::from_str(&text("detectors.toml", bytes)?)
                .map_err(|e| PackError::Manifest { file: "detectors.toml".to_owned(), reason: e.to_string() })?;
            let mut seen = BTreeSet::new();
            for spec in file.detector {
                if !seen.insert(spec.id.clone()) {
                    return Err(PackError::Manifest {
                        file: "detectors.toml".to_owned(),
                        reason: format!("duplicate detector id `{}`", spec.id),
                    });
                }
                if spec.fields.is_empty() {
                    return Err(PackError::Manifest {
                        file: "detectors.toml".to_owned(),
                        reason: format!("detector `{}` scans no fields", spec.id),
                    });
                }
                let _ = spec.description;
                let pattern = regex::RegexBuilder::new(&spec.pattern)
                    .size_limit(1 << 22)
                    .build()
                    .map_err(|e| PackError::Pattern { id: spec.id.clone(), reason: e.to_string() })?;
                detectors.push(Detector {
                    id: spec.id,
                    actions: spec.actions.map(|a| a.into_iter().collect()),
                    fields: spec.fields,
                    pattern,
                    class: spec.class,
                });
            }
        }

        let mut schemas = HashMap::new();
        for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("schemas/") && p.ends_with(".json")) {
            let manifest_err = |reason: String| PackError::Manifest { file: path.clone(), reason };
            let name = path.trim_start_matches("schemas/").trim_end_matches(".json").to_owned();
            let schema: Value = serde_json::from_slice(bytes).map_err(|e| manifest_err(e.to_string()))?;
            let validator = jsonschema::validator_for(&schema).map_err(|e| manifest_err(e.to_string()))?;
            let repair = match schema.get("x-arbiter-repair") {
                None => Vec::new(),
                Some(r) => parse_repair(r).map_err(manifest_err)?,
            };
            schemas.insert(name, ParamSchema { validator, repair });
        }

        let gates = meta.values().filter_map(|m: &PolicyMeta| m.gate.clone()).collect();
        Ok(Self {
            gates,
            identity: PackIdentity { pack: manifest.name, version: manifest.version, hash },
            description: manifest.description,
            default_posture: manifest.default_posture,
            alignment: manifest.alignment,
            risk: manifest.risk,
            mcp_tools: manifest.mcp_tools,
            evidence: manifest.evidence,
            forbids,
            permits,
            meta,
            detectors,
            schemas,
            warnings,
            has_schema: files.iter().any(|(p, _)| p == SCHEMA_FILE),
            files,
        })
    }

    /// Name, version and hash.
    pub fn identity(&self) -> &PackIdentity {
        &self.identity
    }

    /// The pack's description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The pack's files, as loaded (`tests/*.json` among them).
    pub fn files(&self) -> &[(String, Vec<u8>)] {
        &self.files
    }

    /// Cedar validator warnings from loading (empty without a schema).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether the pack has a Cedar schema (and so was validated).
    pub fn has_schema(&self) -> bool {
        self.has_schema
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether the pack is empty (never true for a loaded pack).
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
}

/// `x-arbiter-repair`: `{"clamp": {"limit": [1, 1000]}, "drop": ["force"],
/// "redact": ["token"], "replace": {"branch": "safe"}}`.
fn parse_repair(r: &Value) -> Result<Vec<Transform>, String> {
    let bad = || {
        "`x-arbiter-repair` must be {clamp: {path: [min, max]}, drop: [path], redact: [path], replace: {path: string}}"
            .to_owned()
    };
    let obj = r.as_object().ok_or_else(bad)?;
    let mut out = Vec::new();
    for (kind, spec) in obj {
        match (kind.as_str(), spec) {
            ("clamp", Value::Object(m)) => {
                for (path, range) in m {
                    let lo = range.get(0).and_then(Value::as_i64).ok_or_else(bad)?;
                    let hi = range.get(1).and_then(Value::as_i64).ok_or_else(bad)?;
                    out.push(Transform::Clamp(path.clone(), lo, hi));
                }
            }
            ("drop" | "redact", Value::Array(paths)) => {
                for p in paths {
                    let p = p.as_str().ok_or_else(bad)?.to_owned();
                    out.push(if kind == "drop" { Transform::Drop(p) } else { Transform::Redact(p) });
                }
            }
            ("replace", Value::Object(m)) => {
                for (path, v) in m {
                    out.push(Transform::Replace(path.clone(), v.as_str().ok_or_else(bad)?.to_owned()));
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn first_line(policy: &cedar_policy::Policy) -> String {
    policy.to_string().lines().find(|l| !l.trim_start().starts_with('@')).unwrap_or_default().to_owned()
}

fn collect_embedded(dir: &include_dir::Dir<'static>, out: &mut Vec<(String, Vec<u8>)>) {
    for file in dir.files() {
        out.push((file.path().to_string_lossy().into_owned(), file.contents().to_vec()));
    }
    for sub in dir.dirs() {
        collect_embedded(sub, out);
    }
}

fn collect_dir(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), PackError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| PackError::Io { path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io(dir))?.collect::<Result<_, _>>().map_err(io(dir))?;
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            collect_dir(root, &path, out)?;
        } else if kind.is_file() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
            out.push((rel, std::fs::read(&path).map_err(io(&path))?));
        }
    }
    Ok(())
}

/// Alignment facts the PDP weighs in AARM step 5, from the alignment module.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Scores {
    /// Alignment of the action with the session's intent, in [0, 1]; `None`
    /// while the session has stated no intent.
    pub alignment: Option<f64>,
    /// Confidence in that score, in [0, 1]; 0 when there is no score.
    pub confidence: f64,
    /// The session's drift away from its intent, in [0, 1].
    pub drift: f64,
}

/// The scores a receipt records next to a decision.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct RecordedScores {
    /// Alignment with the intent, when known.
    pub alignment: Option<f64>,
    /// Confidence in the alignment.
    pub confidence: f64,
    /// Session drift.
    pub drift: f64,
    /// Session risk (see [`session_risk`]).
    pub risk: f64,
}

/// The outcome of one policy evaluation, with everything a receipt needs to
/// explain it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyOutcome {
    /// The decision.
    pub decision: Decision,
    /// AARM class of the determining policy, if annotated.
    pub classification: Option<String>,
    /// Why, in words the agent can act on.
    pub reason: String,
    /// Policies (or built-in rules, `arbiter.*`) that produced the decision.
    pub policy_ids: Vec<String>,
    /// Detectors that matched.
    pub signals: Vec<String>,
    /// Data classes this action touches.
    pub data_classes: Vec<String>,
    /// `sha256:<hex>` of the JCS bytes of the Cedar context evaluated.
    pub context_hash: String,
    /// The session as the policies saw it (`context.session`): counts, data
    /// classes, untrusted input. Null when no evaluation happened.
    pub session: Value,
    /// Rewritten parameters for MODIFY.
    pub modified_parameters: Option<Map<String, Value>>,
    /// Approver groups for STEP_UP.
    pub approvers: Vec<String>,
    /// Scores that went into the decision.
    pub scores: RecordedScores,
    /// Set when evaluation failed and the decision was forced.
    pub fault: Option<Fault>,
    /// For a DEFER on unknown context: the attributes the policies read
    /// that are not known yet (e.g. `change_freeze`), the evidence to get.
    pub missing: Vec<String>,
    /// For STEP_UP / DEFER: the deciding policies' `@deadline_secs` (the
    /// shortest) and `@approval_uses` (the fewest).
    pub hold_deadline_secs: Option<u64>,
    /// See `hold_deadline_secs`.
    pub approval_uses: Option<u32>,
}

impl PolicyOutcome {
    /// A DENY that no policy evaluation produced (a fault, a resolution):
    /// empty facts around `reason`.
    pub fn blocked(reason: String) -> Self {
        Self {
            decision: Decision::Deny,
            classification: None,
            reason,
            policy_ids: Vec::new(),
            signals: Vec::new(),
            data_classes: Vec::new(),
            context_hash: String::new(),
            session: Value::Null,
            modified_parameters: None,
            approvers: Vec::new(),
            scores: RecordedScores::default(),
            fault: None,
            missing: Vec::new(),
            hold_deadline_secs: None,
            approval_uses: None,
        }
    }
}

/// What one evaluation found, before the AARM steps order it.
struct Findings<'a> {
    satisfied: Vec<(&'a PolicyId, &'a PolicyMeta)>,
    /// Policies that read a context attribute not yet known, with the error.
    unknown: Vec<(PolicyId, String)>,
    /// Any other evaluation error.
    hard: Vec<String>,
}

/// The policy decision point.
#[derive(Debug)]
pub struct Pdp {
    pack: PolicyPack,
    default_posture: Posture,
    authorizer: Authorizer,
    classifier: Classifier,
    /// Per `tool.operation`, the forbids and permits whose action scope can
    /// match it. Cedar evaluates every policy it is given; with a hundred
    /// policies most of a decision went to policies about other actions.
    /// Built on first use of an action name.
    scoped: std::sync::RwLock<HashMap<String, Arc<(PolicySet, PolicySet)>>>,
}

/// Action names whose scoped policy sets are cached. Action names come from
/// plugins, so the cache is bounded; past this it starts afresh.
const SCOPED_CACHE: usize = 1024;

impl Pdp {
    /// Wrap a pack; `posture` overrides the pack's default posture.
    pub fn new(pack: PolicyPack, posture: Option<Posture>) -> Self {
        let default_posture = posture.unwrap_or(pack.default_posture);
        Self {
            pack,
            default_posture,
            authorizer: Authorizer::new(),
            classifier: Classifier::builtin(),
            scoped: std::sync::RwLock::default(),
        }
    }

    /// The pack in force.
    pub fn pack(&self) -> &PolicyPack {
        &self.pack
    }

    /// The action as this pack names it: an `mcp.call` on a tool listed in
    /// the pack's `[mcp_tools]` becomes that tool's action, targeting the
    /// named parameter (no target when it is missing or not a string).
    /// Every other action is returned as it is.
    pub fn map_action(&self, mut action: CanonicalAction) -> CanonicalAction {
        if action.tool != "mcp" || action.operation != "call" {
            return action;
        }
        let Some(mapped) = action.resource.as_ref().and_then(|r| self.pack.mcp_tools.get(r)) else { return action };
        if let Some((tool, operation)) = mapped.action.split_once('.') {
            action.tool = tool.to_owned();
            action.operation = operation.to_owned();
            action.resource = mapped
                .resource
                .as_ref()
                .and_then(|p| action.parameters.get(p))
                .and_then(Value::as_str)
                .filter(|t| t.len() <= MAX_TARGET_LEN)
                .map(str::to_owned);
        }
        action
    }

    /// Where the deferral service asks for evidence, by evidence name.
    pub fn evidence_resolvers(&self) -> &BTreeMap<String, EvidenceResolver> {
        &self.pack.evidence
    }

    /// The posture applied when nothing matches.
    pub fn default_posture(&self) -> Posture {
        self.default_posture
    }

    /// Decide one action given what the session did so far and the alignment
    /// scores, in AARM's order:
    ///
    /// 0. parameter validation against the pack's schema for the action;
    /// 1. `forbidden` policies → DENY, whatever the context;
    /// 2. compositional risk: `context_dependent_deny` policies, the private
    ///    data + untrusted content + egress combination, the session risk cap
    ///    → DENY;
    /// 3. static baseline: the applicable policies of the highest `@priority`
    ///    give ALLOW / DENY / MODIFY / STEP_UP / DEFER;
    /// 4. uncertainty → DEFER: a policy read a context attribute not yet
    ///    known, the baseline policies disagree, or the alignment confidence
    ///    is below a threshold;
    /// 5. alignment overrides (when the pack sets τ): an allowed but
    ///    misaligned action → DENY; a `context_dependent_allow` denial of an
    ///    aligned action → STEP_UP (or ALLOW); drift past the alert → STEP_UP;
    /// 6. nothing applied → the default posture.
    ///
    /// Deterministic: the same action, session and scores give the same
    /// outcome. Never fails: an evaluation error is a DENY with a fault.
    pub fn decide(&self, action: &CanonicalAction, session: &SessionSummary, scores: &Scores) -> PolicyOutcome {
        let mut out = self.decide_in_order(action, session, scores);
        if matches!(out.decision, Decision::StepUp | Decision::Defer) {
            let metas: Vec<&PolicyMeta> =
                out.policy_ids.iter().filter_map(|id| self.pack.meta.get(&PolicyId::new(id.as_str()))).collect();
            out.hold_deadline_secs = metas.iter().filter_map(|m| m.deadline_secs).min();
            out.approval_uses = metas.iter().filter_map(|m| m.approval_uses).min();
        }
        out
    }

    /// [`Pdp::decide`] without the hold annotations.
    fn decide_in_order(&self, action: &CanonicalAction, session: &SessionSummary, scores: &Scores) -> PolicyOutcome {
        let pack = &self.pack;
        // One JSON view of the parameters, shared by every step below.
        let params = Value::Object(action.parameters.clone());
        let (signals, data_classes) = self.detect(action, &params);
        let risk = session_risk(session, &pack.risk.private_classes);
        let context = cedar_context(action, &params, session, &signals, &data_classes, scores, risk);
        let mut out = PolicyOutcome {
            signals,
            data_classes,
            session: context.get("session").cloned().unwrap_or(Value::Null),
            scores: RecordedScores {
                alignment: scores.alignment,
                confidence: scores.confidence,
                drift: scores.drift,
                risk,
            },
            ..PolicyOutcome::blocked(String::new())
        };
        match serde_jcs::to_vec(&context) {
            Ok(bytes) => out.context_hash = format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            Err(e) => return fail(out, format!("cannot hash context: {e}")),
        }

        // 0. Parameters against the pack's schema.
        let name = action.action_name();
        let mut repaired = None;
        if let Some(schema) = pack.schemas.get(&name)
            && let Some(error) = schema.validator.iter_errors(&params).next()
        {
            let message = format!("{error} at `{}`", error.instance_path);
            let mut fixed = action.parameters.clone();
            schema.repair.iter().for_each(|t| t.apply(&mut fixed));
            if schema.repair.is_empty() || !schema.validator.is_valid(&Value::Object(fixed.clone())) {
                return set(
                    out,
                    Decision::Deny,
                    None,
                    format!("parameters rejected by the pack's schema for `{name}`: {message}"),
                    vec![format!("arbiter.validation.{name}")],
                );
            }
            repaired = Some((fixed, message));
        }

        let findings = match self.evaluate(action, &out.signals, &context) {
            Ok(f) => f,
            Err(message) => return fail(out, message),
        };
        let of_class = |c: &str| -> Vec<(&PolicyId, &PolicyMeta)> {
            findings.satisfied.iter().filter(|(_, m)| m.classification.as_deref() == Some(c)).copied().collect()
        };

        // 1. Forbidden, whatever the context.
        let forbidden = of_class("forbidden");
        if !forbidden.is_empty() {
            return set_from(out, Decision::Deny, "forbidden", &forbidden);
        }
        if !findings.hard.is_empty() {
            return fail(out, findings.hard.join("; "));
        }

        // 2. Compositional risk.
        let composed = of_class("context_dependent_deny");
        if !composed.is_empty() {
            return set_from(out, Decision::Deny, "context_dependent_deny", &composed);
        }
        let private = |c: &String| pack.risk.private_classes.contains(c);
        let egress = action.operation == "egress" || out.signals.iter().any(|s| pack.risk.egress_signals.contains(s));
        if pack.risk.trifecta
            && egress
            && session.untrusted_input
            && (session.data_classes.iter().any(private) || out.data_classes.iter().any(private))
        {
            let reason = "external egress after this session took in untrusted content and touched private data \
                          (private data + untrusted content + egress)";
            return set_class(out, Decision::Deny, "context_dependent_deny", reason, "arbiter.risk.trifecta");
        }
        if let Some(max) = pack.risk.max_score
            && risk >= max
        {
            let reason = format!("session risk {risk:.2} is at or above the pack's limit {max:.2}");
            return set_class(out, Decision::Deny, "context_dependent_deny", &reason, "arbiter.risk.score");
        }

        // 3. Static baseline: the applicable policies of the highest priority.
        let rest: Vec<(&PolicyId, &PolicyMeta)> = findings
            .satisfied
            .iter()
            .filter(|(_, m)| !matches!(m.classification.as_deref(), Some("forbidden" | "context_dependent_deny")))
            .copied()
            .collect();
        let top = rest.iter().map(|(_, m)| m.priority).max();
        let at_top: Vec<(&PolicyId, &PolicyMeta)> =
            rest.iter().filter(|(_, m)| Some(m.priority) == top).copied().collect();

        // 4. Uncertainty. (a) A policy that could change this outcome read
        // something not yet known.
        let relevant: Vec<&(PolicyId, String)> = findings
            .unknown
            .iter()
            .filter(|(id, _)| {
                pack.meta.get(id).is_some_and(|m| {
                    matches!(m.classification.as_deref(), Some("forbidden" | "context_dependent_deny"))
                        || top.is_none_or(|t| m.priority >= t)
                })
            })
            .collect();
        if !relevant.is_empty() {
            let what: Vec<String> = relevant.iter().map(|(id, e)| format!("`{id}`: {e}")).collect();
            let reason = format!("context needed by policy is not known yet ({})", what.join("; "));
            out.policy_ids = relevant.iter().map(|(id, _)| id.to_string()).collect();
            let mut missing: Vec<String> = relevant.iter().filter_map(|(_, e)| quoted(e)).collect();
            missing.sort();
            missing.dedup();
            out.missing = missing;
            return set(out.clone(), Decision::Defer, Some("context_dependent_defer"), reason, out.policy_ids);
        }
        // (b) Applicable policies of the same priority disagree.
        let decisions: BTreeSet<&'static str> = at_top.iter().map(|(_, m)| m.decision.as_str()).collect();
        if decisions.len() > 1 {
            let who: Vec<String> =
                at_top.iter().map(|(id, m)| format!("`{id}` says {}", m.decision.as_str())).collect();
            let reason = format!("policies of the same priority disagree: {}", who.join(", "));
            let ids = at_top.iter().map(|(id, _)| id.to_string()).collect();
            return set(out, Decision::Defer, Some("context_dependent_defer"), reason, ids);
        }
        // (c) Confidence below a threshold.
        let dependent =
            at_top.iter().any(|(_, m)| m.classification.as_deref().is_some_and(|c| c.starts_with("context_dependent")));
        let needed = at_top
            .iter()
            .filter_map(|(_, m)| m.min_confidence)
            .chain(dependent.then_some(pack.alignment.min_confidence))
            .fold(0.0_f64, f64::max);
        if needed > 0.0 && scores.confidence < needed {
            let reason = format!("alignment confidence {:.2} is below the required {needed:.2}", scores.confidence);
            let ids = at_top.iter().map(|(id, _)| id.to_string()).collect();
            return set(out, Decision::Defer, Some("context_dependent_defer"), reason, ids);
        }

        // Nothing applied: the default posture is the baseline (step 6), and
        // still faces the alignment overrides below when it would proceed.
        let (baseline, lead) = match at_top.first() {
            Some(&(_, lead)) => (lead.decision, Some(lead)),
            None => (
                match self.default_posture {
                    Posture::Allow => Decision::Allow,
                    Posture::Deny => Decision::Deny,
                },
                None,
            ),
        };
        if lead.is_some() {
            let lead_class = at_top.iter().find_map(|(_, m)| m.classification.clone());
            out = set_from(out, baseline, lead_class.as_deref().unwrap_or(""), &at_top);
            if lead_class.is_none() {
                out.classification = None;
            }
        } else {
            let reason = format!("no policy matched; default posture is {}", baseline.as_str());
            out = set(out, baseline, None, reason, vec![DEFAULT_POLICY_ID.to_owned()]);
        }

        // 5. Alignment overrides.
        if let (Some(tau), Some(score)) = (pack.alignment.tau, scores.alignment) {
            if baseline.proceeds() && score < tau {
                let reason = format!(
                    "the action does not align with the session's stated intent (alignment {score:.2} < {tau:.2})"
                );
                return set_class(
                    out,
                    Decision::Deny,
                    "context_dependent_deny",
                    &reason,
                    "arbiter.alignment.misaligned",
                );
            }
            let confirming = at_top.iter().find(|(_, m)| {
                m.classification.as_deref() == Some("context_dependent_allow") && !m.decision.proceeds()
            });
            if let Some((id, m)) = confirming
                && score >= tau
            {
                let reason = format!(
                    "{} — the session's intent confirms it (alignment {score:.2} ≥ {tau:.2})",
                    m.reason.clone().unwrap_or_else(|| format!("policy `{id}`"))
                );
                out.approvers = m.approvers.clone();
                return set(out.clone(), m.aligned_decision, Some("context_dependent_allow"), reason, out.policy_ids);
            }
        }
        if let Some(alert) = pack.alignment.drift_alert
            && baseline.proceeds()
            && scores.drift >= alert
        {
            let reason = format!(
                "the session has drifted from its stated intent (drift {:.2} ≥ {alert:.2}); a human must approve",
                scores.drift
            );
            return set_class(out, Decision::StepUp, "context_dependent_allow", &reason, "arbiter.alignment.drift");
        }

        // MODIFY: every transform of the deciding policies, in id order, on
        // top of a schema repair if there was one.
        let mut params = repaired.as_ref().map_or_else(|| action.parameters.clone(), |(p, _)| p.clone());
        if baseline == Decision::Modify {
            at_top.iter().flat_map(|(_, m)| &m.transforms).for_each(|t| t.apply(&mut params));
            out.modified_parameters = Some(params);
        } else if let (Some((fixed, message)), true) = (repaired, baseline == Decision::Allow) {
            // A repair only narrows what was already allowed; it never lets
            // through what the policies or the default posture block.
            out.decision = Decision::Modify;
            out.modified_parameters = Some(fixed);
            out.reason = format!("{}; parameters repaired to fit the pack's schema ({message})", out.reason);
            out.policy_ids.push(format!("arbiter.validation.{name}"));
        }
        if out.decision == Decision::StepUp {
            out.approvers = at_top
                .iter()
                .flat_map(|(_, m)| m.approvers.iter().cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
        }
        out
    }

    /// The forbids and permits that can apply to `tool.operation`: those
    /// whose action scope is unconstrained, names the action, or names its
    /// tool group (`Action::"tool"`).
    fn scoped_sets(&self, action: &CanonicalAction, signals: &[String]) -> Result<Arc<(PolicySet, PolicySet)>, String> {
        let name = action.action_name();
        // Only signals that gate some policy change which policies run.
        let gates: Vec<&String> = signals.iter().filter(|s| self.pack.gates.contains(*s)).collect();
        let key = format!("{name}\u{0}{}", gates.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\u{0}"));
        if let Some(sets) = self.scoped.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            return Ok(sets.clone());
        }
        let uid = |id: &str| -> Result<EntityUid, String> {
            Ok(EntityUid::from_type_name_and_id(
                EntityTypeName::from_str("Action").map_err(|e| e.to_string())?,
                EntityId::new(id),
            ))
        };
        let (own, group) = (uid(&name)?, uid(&action.tool)?);
        let applies = |p: &cedar_policy::Policy| {
            let gated_out =
                self.pack.meta.get(p.id()).and_then(|m| m.gate.as_ref()).is_some_and(|g| !gates.contains(&g));
            !gated_out
                && match p.action_constraint() {
                    cedar_policy::ActionConstraint::Any => true,
                    cedar_policy::ActionConstraint::Eq(a) => a == own,
                    cedar_policy::ActionConstraint::In(list) => list.iter().any(|a| *a == own || *a == group),
                }
        };
        let filter = |set: &PolicySet| -> Result<PolicySet, String> {
            PolicySet::from_policies(set.policies().filter(|p| applies(p)).cloned()).map_err(|e| e.to_string())
        };
        let sets = Arc::new((filter(&self.pack.forbids)?, filter(&self.pack.permits)?));
        let mut cache = self.scoped.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= SCOPED_CACHE {
            cache.clear();
        }
        cache.insert(key, sets.clone());
        Ok(sets)
    }

    /// Evaluate forbids and permits separately and sort out the errors.
    fn evaluate(&self, action: &CanonicalAction, signals: &[String], context: &Value) -> Result<Findings<'_>, String> {
        let (request, entities) = self.request(action, context)?;
        let sets = self.scoped_sets(action, signals)?;
        let mut findings = Findings { satisfied: Vec::new(), unknown: Vec::new(), hard: Vec::new() };
        for set in [&sets.0, &sets.1] {
            let response = self.authorizer.is_authorized(&request, set, &entities);
            for id in response.diagnostics().reason() {
                if let Some((id, meta)) = self.pack.meta.get_key_value(id) {
                    findings.satisfied.push((id, meta));
                }
            }
            for error in response.diagnostics().errors() {
                let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
                match e.inner() {
                    EvaluationError::RecordAttrDoesNotExist(_) | EvaluationError::EntityAttrDoesNotExist(_) => {
                        findings.unknown.push((e.policy_id().clone(), e.inner().to_string()));
                    }
                    _ => findings.hard.push(e.to_string()),
                }
            }
        }
        findings.satisfied.sort_by(|a, b| a.0.cmp(b.0));
        findings.unknown.sort();
        Ok(findings)
    }

    /// Classes of a tool's output (what an observation brings into the
    /// session), with unknown mapped to the pack's highest class.
    pub fn classify_output(&self, output: &Value) -> Vec<String> {
        self.resolve_classes(self.classifier.classify_value(output).classes).into_iter().collect()
    }

    /// Replace `UNKNOWN` by the highest class the pack defines.
    fn resolve_classes(&self, classes: BTreeSet<String>) -> BTreeSet<String> {
        classes
            .into_iter()
            .map(|c| match (c.as_str(), self.pack.risk.class_order.last()) {
                (crate::classify::UNKNOWN, Some(highest)) => highest.clone(),
                _ => c,
            })
            .collect()
    }

    /// Run every applicable detector over the action.
    fn detect(&self, action: &CanonicalAction, params: &Value) -> (Vec<String>, Vec<String>) {
        let name = action.action_name();
        let mut signals = BTreeSet::new();
        let mut classes = BTreeSet::new();
        for d in &self.pack.detectors {
            if d.actions.as_ref().is_some_and(|a| !a.contains(&name)) {
                continue;
            }
            let mut hit = false;
            for field in &d.fields {
                hit = match field.as_str() {
                    "$target" => action.resource.as_deref().is_some_and(|s| scan(&d.pattern, s)),
                    "*" => {
                        action.resource.as_deref().is_some_and(|s| scan(&d.pattern, s))
                            || any_string(params, 0, &mut |s| scan(&d.pattern, s))
                    }
                    key => action.parameters.get(key).is_some_and(|v| any_string(v, 0, &mut |s| scan(&d.pattern, s))),
                };
                if hit {
                    break;
                }
            }
            if hit {
                signals.insert(d.id.clone());
                if let Some(c) = &d.class {
                    classes.insert(c.clone());
                }
            }
        }
        // Built-in content detectors (keys, tokens, PII), whatever the pack.
        let mut found = self.classifier.classify_value(params);
        if let Some(r) = &action.resource {
            found.merge(self.classifier.classify_text(r));
        }
        signals.extend(found.detectors);
        classes.extend(self.resolve_classes(found.classes));
        (signals.into_iter().collect(), classes.into_iter().collect())
    }

    /// Build the Cedar request. Values are constructed directly (no trip
    /// through Cedar's JSON entity format, which was a tenth of the CPU of a
    /// decision and would also read `__entity` keys as entity references).
    fn request(&self, action: &CanonicalAction, context: &Value) -> Result<(Request, Entities), String> {
        let rc = &action.requester_context;
        let agent = rc.agent.as_deref().unwrap_or("unknown");
        let name = action.action_name();
        let uid = |ty: &str, id: &str| -> Result<EntityUid, String> {
            Ok(EntityUid::from_type_name_and_id(
                EntityTypeName::from_str(ty).map_err(|e| e.to_string())?,
                EntityId::new(id),
            ))
        };
        let principal = uid("Agent", agent)?;
        let action_uid = uid("Action", &name)?;
        let tool_group = uid("Action", &action.tool)?;
        let resource = uid("Tool", &action.tool)?;
        let mut attrs = HashMap::from([
            ("service".to_owned(), RestrictedExpression::new_string(rc.service.clone().unwrap_or_default())),
            ("integration".to_owned(), RestrictedExpression::new_string(action.integration.clone())),
            (
                "roles".to_owned(),
                RestrictedExpression::new_set(rc.roles.iter().cloned().map(RestrictedExpression::new_string)),
            ),
        ]);
        if let Some(h) = &rc.human {
            attrs.insert("human".to_owned(), RestrictedExpression::new_string(h.clone()));
        }
        let entities = Entities::from_entities(
            [
                Entity::new(principal.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?,
                Entity::new_no_attrs(action_uid.clone(), HashSet::from([tool_group.clone()])),
                Entity::new_no_attrs(tool_group, HashSet::new()),
                Entity::new_no_attrs(resource.clone(), HashSet::new()),
            ],
            None,
        )
        .map_err(|e| e.to_string())?;
        let Value::Object(fields) = context else {
            return Err("context is not an object".to_owned());
        };
        let mut pairs = Vec::with_capacity(fields.len());
        for (k, v) in fields {
            if let Some(r) = restricted(v, 0)? {
                pairs.push((k.clone(), r));
            }
        }
        let context = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
        let request = Request::new(principal, action_uid, resource, context, None).map_err(|e| e.to_string())?;
        Ok((request, entities))
    }
}

/// Fill in the decision of `out`.
fn set(
    mut out: PolicyOutcome,
    decision: Decision,
    class: Option<&str>,
    reason: String,
    ids: Vec<String>,
) -> PolicyOutcome {
    out.decision = decision;
    out.classification = class.map(str::to_owned);
    out.reason = reason;
    out.policy_ids = ids;
    out
}

/// A decision by one built-in rule.
fn set_class(out: PolicyOutcome, decision: Decision, class: &str, reason: &str, id: &str) -> PolicyOutcome {
    set(out, decision, Some(class), reason.to_owned(), vec![id.to_owned()])
}

/// A decision by pack policies: their ids and `@reason`s.
fn set_from(
    out: PolicyOutcome,
    decision: Decision,
    class: &str,
    policies: &[(&PolicyId, &PolicyMeta)],
) -> PolicyOutcome {
    let reasons: BTreeSet<String> =
        policies.iter().map(|(id, m)| m.reason.clone().unwrap_or_else(|| format!("matched policy `{id}`"))).collect();
    let verb = match decision {
        Decision::Deny => "denied by policy",
        Decision::Allow => "allowed by policy",
        Decision::Modify => "modified by policy",
        Decision::StepUp => "needs approval by policy",
        Decision::Defer => "deferred by policy",
    };
    let reason = format!("{verb}: {}", reasons.into_iter().collect::<Vec<_>>().join("; "));
    let ids = policies.iter().map(|(id, _)| id.to_string()).collect();
    set(out, decision, (!class.is_empty()).then_some(class), reason, ids)
}

/// Evaluation failed: DENY, fail closed, with the fault.
fn fail(mut out: PolicyOutcome, message: String) -> PolicyOutcome {
    out.decision = Decision::Deny;
    out.classification = None;
    out.reason = format!("policy evaluation failed, denied to fail closed: {message}");
    out.policy_ids = Vec::new();
    out.fault = Some(Fault::new(FaultComponent::Policy, FaultKind::Evaluation, message));
    out
}

/// A JSON value (already passed through [`cedar_safe`]) as a Cedar value;
/// `None` for null.
fn restricted(v: &Value, depth: usize) -> Result<Option<RestrictedExpression>, String> {
    if depth > MAX_DEPTH + 2 {
        return Ok(Some(RestrictedExpression::new_string("<too deep>".to_owned())));
    }
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_string(n.to_string()),
        },
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                if let Some(r) = restricted(i, depth + 1)? {
                    out.push(r);
                }
            }
            RestrictedExpression::new_set(out)
        }
        Value::Object(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, i) in map {
                if let Some(r) = restricted(i, depth + 1)? {
                    out.push((k.clone(), r));
                }
            }
            RestrictedExpression::new_record(out).map_err(|e| e.to_string())?
        }
    }))
}

/// Match `pattern` against the whole of `s`. No window: a forbidden command
/// must not hide in the middle of a long parameter. The regex engine is
/// linear in the input, and the ingress body limit (1 MiB) bounds the input,
/// so the worst case is about a millisecond per detector.
fn scan(pattern: &Regex, s: &str) -> bool {
    pattern.is_match(s)
}

/// Whether `f` holds for any string leaf of `v` (bounded depth).
fn any_string(v: &Value, depth: usize, f: &mut dyn FnMut(&str) -> bool) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match v {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().any(|i| any_string(i, depth + 1, f)),
        Value::Object(map) => map.values().any(|i| any_string(i, depth + 1, f)),
        _ => false,
    }
}

/// The first `backticked` word of a Cedar error message: the attribute a
/// missing-attribute error names.
fn quoted(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (name, _) = rest.split_once('`')?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// Build the Cedar context (see docs/policy-guide.md for the model).
/// Attributes that are not known yet are absent, not defaulted: a policy
/// that reads one gets Cedar's missing-attribute error, which is AARM's
/// first DEFER trigger. `alignment` is absent until the session states an
/// intent; `evidence` holds facts gathered for deferred actions.
fn cedar_context(
    action: &CanonicalAction,
    params: &Value,
    session: &SessionSummary,
    signals: &[String],
    data_classes: &[String],
    scores: &Scores,
    risk: f64,
) -> Value {
    let permille = |x: f64| (x.clamp(0.0, 1.0) * 1000.0).round() as i64;
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut context = json!({
        "tool": action.tool,
        "operation": action.operation,
        "original_tool": action.original_tool,
        "event_kind": action.event_kind,
        "integration": action.integration,
        "target": action.resource.clone().unwrap_or_default(),
        "cwd": action.requester_context.attributes.get("cwd").and_then(Value::as_str).unwrap_or_default(),
        "parameters": cedar_safe(params, 0).unwrap_or_else(|| json!({})),
        "signals": signals,
        "data_classes": data_classes,
        "risk": permille(risk),
        "evidence": session.evidence,
        "session": {
            "actions": count(session.actions),
            "denied": count(session.denied),
            "intents": count(session.intents),
            "egress": count(session.egress),
            "data_classes": session.data_classes,
            "untrusted_input": session.untrusted_input,
            "performed": session.performed,
            "actions_per_minute": session.action_rate.round() as i64,
        },
    });
    if let (Some(score), Value::Object(map)) = (scores.alignment, &mut context) {
        map.insert(
            "alignment".to_owned(),
            json!({"score": permille(score), "confidence": permille(scores.confidence), "drift": permille(scores.drift)}),
        );
    }
    context
}

/// Normalise arbitrary JSON into what the Cedar context holds (and what the
/// context hash covers): nulls dropped, non-integer numbers as strings
/// (Cedar has only 64-bit integers), nesting bounded.
fn cedar_safe(v: &Value, depth: usize) -> Option<Value> {
    if depth > MAX_DEPTH {
        return Some(Value::String("<too deep>".to_owned()));
    }
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) | Value::String(_) => v.clone(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => Value::String(n.to_string()),
        },
        Value::Array(items) => Value::Array(items.iter().filter_map(|i| cedar_safe(i, depth + 1)).collect()),
        Value::Object(map) => {
            let mut out = BTreeMap::new();
            for (k, item) in map {
                if let Some(item) = cedar_safe(item, depth + 1) {
                    out.insert(k.clone(), item);
                }
            }
            Value::Object(out.into_iter().collect())
        }
    })
}

pub mod testing;

#[cfg(test)]
mod tests;
