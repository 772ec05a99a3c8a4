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

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicyId, PolicySet, Request, RestrictedExpression,
};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::context::SessionSummary;
use crate::model::{CanonicalAction, Decision, Fault, FaultComponent, FaultKind};

/// The bundled default pack, compiled into the binary.
static BASELINE: include_dir::Dir<'static> = include_dir::include_dir!("$CARGO_MANIFEST_DIR/../policies/baseline");

/// Id recorded when no policy matched and the default posture decided.
pub const DEFAULT_POLICY_ID: &str = "arbiter.default";

/// The four AARM action classes, as written in `@classification`.
pub const CLASSIFICATIONS: [&str; 4] =
    ["forbidden", "context_dependent_deny", "context_dependent_allow", "context_dependent_defer"];

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
    policies: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
    detectors: Vec<Detector>,
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

        let mut policies = PolicySet::new();
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
                if let Some(d) = policy.annotation("decision") {
                    let parsed = Decision::parse(d)
                        .ok_or_else(|| annotation_err(format!("`{id}`: unknown `@decision(\"{d}\")`")))?;
                    let consistent = match policy.effect() {
                        Effect::Forbid => parsed == Decision::Deny,
                        Effect::Permit => parsed != Decision::Deny,
                    };
                    if !consistent {
                        return Err(annotation_err(format!(
                            "`{id}`: `@decision(\"{d}\")` contradicts the policy's effect"
                        )));
                    }
                }
                let pid = PolicyId::new(id);
                if meta.contains_key(&pid) {
                    return Err(annotation_err(format!("duplicate `@id(\"{id}\")`")));
                }
                meta.insert(
                    pid.clone(),
                    PolicyMeta { classification, reason: policy.annotation("reason").map(str::to_owned) },
                );
                policies.add(policy.new_id(pid)).map_err(|e| annotation_err(format!("`{id}`: {e}")))?;
            }
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

        Ok(Self {
            identity: PackIdentity { pack: manifest.name, version: manifest.version, hash },
            description: manifest.description,
            default_posture: manifest.default_posture,
            policies,
            meta,
            detectors,
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

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    /// Whether the pack is empty (never true for a loaded pack).
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
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
    /// Policies that produced the decision.
    pub policy_ids: Vec<String>,
    /// Detectors that matched.
    pub signals: Vec<String>,
    /// Data classes this action touches.
    pub data_classes: Vec<String>,
    /// `sha256:<hex>` of the JCS bytes of the Cedar context evaluated.
    pub context_hash: String,
    /// Rewritten parameters for MODIFY.
    pub modified_parameters: Option<Map<String, Value>>,
    /// Set when evaluation failed and the decision was forced.
    pub fault: Option<Fault>,
}

/// The policy decision point.
#[derive(Debug)]
pub struct Pdp {
    pack: PolicyPack,
    default_posture: Posture,
    authorizer: Authorizer,
}

impl Pdp {
    /// Wrap a pack; `posture` overrides the pack's default posture.
    pub fn new(pack: PolicyPack, posture: Option<Posture>) -> Self {
        let default_posture = posture.unwrap_or(pack.default_posture);
        Self { pack, default_posture, authorizer: Authorizer::new() }
    }

    /// The pack in force.
    pub fn pack(&self) -> &PolicyPack {
        &self.pack
    }

    /// The posture applied when nothing matches.
    pub fn default_posture(&self) -> Posture {
        self.default_posture
    }

    /// Decide one action given what the session did so far. Deterministic:
    /// the same action and session give the same outcome.
    pub fn decide(&self, action: &CanonicalAction, session: &SessionSummary) -> PolicyOutcome {
        let (signals, data_classes) = self.detect(action);
        let context = cedar_context(action, session, &signals, &data_classes);
        let context_hash = match serde_jcs::to_vec(&context) {
            Ok(bytes) => format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            Err(e) => return self.fault(signals, data_classes, String::new(), format!("cannot hash context: {e}")),
        };
        let request = match self.request(action, &context) {
            Ok(r) => r,
            Err(message) => return self.fault(signals, data_classes, context_hash, message),
        };
        let (request, entities) = request;
        let response = self.authorizer.is_authorized(&request, &self.pack.policies, &entities);
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        if !errors.is_empty() {
            return self.fault(signals, data_classes, context_hash, errors.join("; "));
        }
        let mut ids: Vec<PolicyId> = response.diagnostics().reason().cloned().collect();
        ids.sort();
        let outcome = |decision, classification, reason, policy_ids| PolicyOutcome {
            decision,
            classification,
            reason,
            policy_ids,
            signals: signals.clone(),
            data_classes: data_classes.clone(),
            context_hash: context_hash.clone(),
            modified_parameters: None,
            fault: None,
        };
        if ids.is_empty() {
            return match self.default_posture {
                Posture::Allow => outcome(
                    Decision::Allow,
                    None,
                    "no policy matched; default posture is ALLOW".to_owned(),
                    vec![DEFAULT_POLICY_ID.to_owned()],
                ),
                Posture::Deny => outcome(
                    Decision::Deny,
                    None,
                    "no policy matched; default posture is DENY".to_owned(),
                    vec![DEFAULT_POLICY_ID.to_owned()],
                ),
            };
        }
        let decision = match response.decision() {
            CedarDecision::Allow => Decision::Allow,
            CedarDecision::Deny => Decision::Deny,
        };
        // A forbidden-class policy outranks any other reason text.
        let metas: Vec<(&PolicyId, Option<&PolicyMeta>)> = ids.iter().map(|id| (id, self.pack.meta.get(id))).collect();
        let lead = metas
            .iter()
            .find(|(_, m)| m.and_then(|m| m.classification.as_deref()) == Some("forbidden"))
            .or_else(|| metas.first());
        let classification = lead.and_then(|(_, m)| m.and_then(|m| m.classification.clone()));
        let reasons: Vec<String> = metas
            .iter()
            .map(|(id, m)| m.and_then(|m| m.reason.clone()).unwrap_or_else(|| format!("matched policy `{id}`")))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let verb = if decision == Decision::Deny { "denied" } else { "allowed" };
        let reason = format!("{verb} by policy: {}", reasons.join("; "));
        outcome(decision, classification, reason, ids.iter().map(ToString::to_string).collect())
    }

    fn fault(
        &self,
        signals: Vec<String>,
        data_classes: Vec<String>,
        context_hash: String,
        message: String,
    ) -> PolicyOutcome {
        PolicyOutcome {
            decision: Decision::Deny,
            classification: None,
            reason: format!("policy evaluation failed, denied to fail closed: {message}"),
            policy_ids: Vec::new(),
            signals,
            data_classes,
            context_hash,
            modified_parameters: None,
            fault: Some(Fault::new(FaultComponent::Policy, FaultKind::Evaluation, message)),
        }
    }

    /// Run every applicable detector over the action.
    fn detect(&self, action: &CanonicalAction) -> (Vec<String>, Vec<String>) {
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
                            || any_string(&Value::Object(action.parameters.clone()), 0, &mut |s| scan(&d.pattern, s))
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

/// Build the Cedar context (see docs/policy-guide.md for the model).
fn cedar_context(
    action: &CanonicalAction,
    session: &SessionSummary,
    signals: &[String],
    data_classes: &[String],
) -> Value {
    json!({
        "tool": action.tool,
        "operation": action.operation,
        "original_tool": action.original_tool,
        "event_kind": action.event_kind,
        "integration": action.integration,
        "target": action.resource.clone().unwrap_or_default(),
        "cwd": action.requester_context.attributes.get("cwd").and_then(Value::as_str).unwrap_or_default(),
        "parameters": cedar_safe(&Value::Object(action.parameters.clone()), 0).unwrap_or_else(|| json!({})),
        "signals": signals,
        "data_classes": data_classes,
        "session": {
            "actions": i64::try_from(session.actions).unwrap_or(i64::MAX),
            "denied": i64::try_from(session.denied).unwrap_or(i64::MAX),
            "intents": i64::try_from(session.intents).unwrap_or(i64::MAX),
            "egress": i64::try_from(session.egress).unwrap_or(i64::MAX),
            "data_classes": session.data_classes,
            "untrusted_input": session.untrusted_input,
        },
    })
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

#[cfg(test)]
mod tests;
