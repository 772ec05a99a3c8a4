//! Context accumulator: each session's append-only, hash-chained log of
//! events (intents, decided actions, observations, lifecycle), and the
//! summary derived from it that the PDP sees.
//!
//! Every entry carries `prev_hash` (the previous entry's `hash`, genesis =
//! 64 zeros) and `hash` = SHA-256 of the JCS bytes of the entry without
//! `hash`. Editing any stored entry breaks the chain at that entry, which
//! [`verify_chain`] reports. Entries are written only by the store's writer
//! thread, so a session's chain has a single writer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::Decision;

/// The genesis `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest intent text kept in the summary, in bytes.
const MAX_INTENT_BYTES: usize = 4096;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The user's request.
    Intent,
    /// A decided action.
    Action,
    /// A tool's output.
    Observation,
    /// Session started.
    SessionStart,
    /// Session ended.
    SessionEnd,
    /// Another lifecycle event (stop, notification).
    Other,
    /// Evidence supplied for deferred actions (`data.evidence`: name → value).
    Evidence,
}

/// An entry before the writer chains it.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryDraft {
    /// Session it belongs to.
    pub session_id: String,
    /// What it records.
    pub kind: EntryKind,
    /// Kind-specific payload (see [`SessionSummary::apply`] for what is read).
    pub data: Value,
}

/// A chained entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the session, from 0.
    pub seq: u64,
    /// What it records.
    pub kind: EntryKind,
    /// When it was appended (RFC 3339).
    pub at: String,
    /// Payload.
    pub data: Value,
    /// Hash of the previous entry.
    pub prev_hash: String,
    /// SHA-256 (hex) of this entry's JCS bytes without `hash`.
    pub hash: String,
}

impl Entry {
    /// Compute the hash this entry should carry.
    pub fn compute_hash(seq: u64, kind: EntryKind, at: &str, data: &Value, prev_hash: &str) -> String {
        let body = json!({"seq": seq, "kind": kind, "at": at, "data": data, "prev_hash": prev_hash});
        // INVARIANT: a serde_json::Value always serialises under JCS.
        let bytes = serde_jcs::to_vec(&body).unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

/// Where a session's chain first fails to verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The first entry that does not verify.
    pub seq: u64,
    /// What is wrong with it.
    pub problem: String,
}

/// Check a session's entries in order. `None` when the chain is intact.
pub fn verify_chain(entries: &[Entry]) -> Option<BrokenLink> {
    verify_chain_from(0, GENESIS, entries)
}

/// Check entries that continue a chain whose entry `start - 1` has hash
/// `prev_hash` (genesis for `start == 0`).
pub fn verify_chain_from(start: u64, prev_hash: &str, entries: &[Entry]) -> Option<BrokenLink> {
    let mut prev = prev_hash.to_owned();
    for (i, e) in entries.iter().enumerate() {
        let expected_seq = start + i as u64;
        if e.seq != expected_seq {
            return Some(BrokenLink { seq: expected_seq, problem: format!("entry {expected_seq} is missing") });
        }
        if e.prev_hash != prev {
            return Some(BrokenLink { seq: e.seq, problem: "prev_hash does not match the previous entry".to_owned() });
        }
        if Entry::compute_hash(e.seq, e.kind, &e.at, &e.data, &e.prev_hash) != e.hash {
            return Some(BrokenLink { seq: e.seq, problem: "content does not match its hash".to_owned() });
        }
        prev = e.hash.clone();
    }
    None
}

/// Most evidence names a session holds.
pub const MAX_EVIDENCE: usize = 64;

/// Most distinct action names kept in [`SessionSummary::performed`].
pub const MAX_PERFORMED: usize = 1024;

/// Time constant of [`SessionSummary::action_rate`], in milliseconds.
const RATE_WINDOW_MS: f64 = 60_000.0;

/// What the PDP knows of a session: derived from its entries, stored beside
/// them and updated in the same batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The session.
    pub session_id: String,
    /// Entries so far (= next entry's seq).
    pub entries: u64,
    /// Hash of the last entry (GENESIS when empty).
    pub head_hash: String,
    /// The first intent of the session (the original request).
    pub original_intent: Option<String>,
    /// The latest intent.
    pub latest_intent: Option<String>,
    /// Intents received.
    pub intents: u64,
    /// Actions decided.
    pub actions: u64,
    /// Actions denied (or otherwise blocked).
    pub denied: u64,
    /// Observations of tool output.
    pub observations: u64,
    /// Network egress actions that were let through.
    pub egress: u64,
    /// Data classes touched by actions that were let through.
    pub data_classes: BTreeSet<String>,
    /// Whether content from outside (web, MCP) has entered the session.
    pub untrusted_input: bool,
    /// Whether the vendor reported the session's end.
    pub ended: bool,
    /// Drift from the latest intent in [0, 1]: the moving average of the
    /// misalignment of the actions scored since that intent (see
    /// `alignment::fold_drift`). A new intent starts it afresh.
    #[serde(default)]
    pub drift: f64,
    /// Actions scored against the latest intent.
    #[serde(default)]
    pub scored_actions: u64,
    /// `tool.operation` of every action let through so far (at most
    /// [`MAX_PERFORMED`] names).
    #[serde(default)]
    pub performed: BTreeSet<String>,
    /// Action rate: an exponentially weighted count of the actions decided
    /// (let through or not) with a one-minute time constant, as of the
    /// latest action; about the number of actions in the last minute.
    #[serde(default)]
    pub action_rate: f64,
    /// Unix milliseconds of the latest action, which `action_rate` is as of.
    #[serde(default)]
    pub action_rate_at_ms: Option<i64>,
    /// Evidence supplied so far (`context.evidence` of the policies): the
    /// latest value of each name, at most [`MAX_EVIDENCE`] names.
    #[serde(default)]
    pub evidence: BTreeMap<String, String>,
    /// First entry time.
    pub started_at: Option<String>,
    /// Last entry time.
    pub updated_at: Option<String>,
}

impl SessionSummary {
    /// Empty summary of a new session.
    pub fn new(session_id: &str) -> Self {
        Self { session_id: session_id.to_owned(), head_hash: GENESIS.to_owned(), ..Self::default() }
    }

    /// Fold one entry into the summary.
    ///
    /// Reads: intent `data.text`; action `data.decision`, `data.tool`,
    /// `data.operation`, `data.data_classes`, `data.alignment`; observation
    /// `data.tool`, `data.data_classes`.
    pub fn apply(&mut self, entry: &Entry) {
        self.entries = entry.seq + 1;
        self.head_hash = entry.hash.clone();
        if self.started_at.is_none() {
            self.started_at = Some(entry.at.clone());
        }
        self.updated_at = Some(entry.at.clone());
        let d = &entry.data;
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default();
        match entry.kind {
            EntryKind::Intent => {
                let text = truncate(s("text"), MAX_INTENT_BYTES);
                self.intents += 1;
                if self.original_intent.is_none() {
                    self.original_intent = Some(text.clone());
                }
                self.latest_intent = Some(text);
                self.drift = 0.0;
                self.scored_actions = 0;
            }
            EntryKind::Action => {
                self.actions += 1;
                self.count_action_at(&entry.at);
                if let Some(score) = d.get("alignment").and_then(Value::as_f64) {
                    let previous = (self.scored_actions > 0).then_some(self.drift);
                    self.drift = crate::alignment::fold_drift(previous, score);
                    self.scored_actions += 1;
                }
                let proceeds = Decision::parse(s("decision")).is_some_and(Decision::proceeds);
                if !proceeds {
                    self.denied += 1;
                    return;
                }
                if s("operation") == "egress" {
                    self.egress += 1;
                }
                if self.performed.len() < MAX_PERFORMED {
                    self.performed.insert(format!("{}.{}", s("tool"), s("operation")));
                }
                if let Some(classes) = d.get("data_classes").and_then(Value::as_array) {
                    self.data_classes.extend(classes.iter().filter_map(Value::as_str).map(str::to_owned));
                }
            }
            EntryKind::Observation => {
                self.observations += 1;
                // Output of a tool that reads the outside world is untrusted:
                // it may carry injected instructions.
                if matches!(s("tool"), "network" | "mcp") {
                    self.untrusted_input = true;
                    self.data_classes.insert("UNTRUSTED".to_owned());
                }
                if let Some(classes) = d.get("data_classes").and_then(Value::as_array) {
                    self.data_classes.extend(classes.iter().filter_map(Value::as_str).map(str::to_owned));
                }
            }
            EntryKind::Evidence => {
                let given = d.get("evidence").and_then(Value::as_object).into_iter().flatten();
                for (name, value) in given {
                    let Some(value) = value.as_str() else { continue };
                    if self.evidence.len() < MAX_EVIDENCE || self.evidence.contains_key(name) {
                        self.evidence.insert(name.clone(), value.to_owned());
                    }
                }
            }
            EntryKind::SessionEnd => self.ended = true,
            EntryKind::SessionStart | EntryKind::Other => {}
        }
    }
}

impl SessionSummary {
    /// Fold one action at time `at` (RFC 3339) into the action rate. An
    /// entry without a readable time (a policy test's) counts undecayed.
    fn count_action_at(&mut self, at: &str) {
        let now = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok());
        let decay = match (now, self.action_rate_at_ms) {
            (Some(now), Some(then)) => (-((now - then).max(0) as f64) / RATE_WINDOW_MS).exp(),
            _ => 1.0,
        };
        self.action_rate = self.action_rate * decay + 1.0;
        if now.is_some() {
            self.action_rate_at_ms = now;
        }
    }
}

/// An intent as the session keeps it (clipped to its first 4 KiB).
pub fn stored_intent(text: &str) -> String {
    truncate(text, MAX_INTENT_BYTES)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    s.get(..end).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn chain(n: u64) -> Vec<Entry> {
        let mut prev = GENESIS.to_owned();
        (0..n)
            .map(|seq| {
                let data = json!({"text": format!("step {seq}")});
                let at = "2026-11-23T00:00:00.000Z".to_owned();
                let hash = Entry::compute_hash(seq, EntryKind::Intent, &at, &data, &prev);
                let e = Entry { seq, kind: EntryKind::Intent, at, data, prev_hash: prev.clone(), hash: hash.clone() };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    // An untouched chain verifies.
    fn intact_chain_verifies() {
        assert_eq!(verify_chain(&chain(5)), None);
    }

    #[test]
    // Editing an entry's data is reported at that entry.
    fn edited_entry_is_detected() {
        let mut c = chain(5);
        c[2].data = json!({"text": "forged"});
        assert_eq!(verify_chain(&c).map(|b| b.seq), Some(2));
    }

    #[test]
    // Removing an entry is reported where it went missing.
    fn removed_entry_is_detected() {
        let mut c = chain(5);
        c.remove(3);
        assert_eq!(verify_chain(&c).map(|b| b.seq), Some(3));
    }

    #[test]
    // Only actions that were let through add data classes and egress.
    fn denied_actions_do_not_taint_the_session() {
        let mut s = SessionSummary::new("s");
        let mk = |seq, decision: &str| Entry {
            seq,
            kind: EntryKind::Action,
            at: String::new(),
            data: json!({"decision": decision, "operation": "egress", "data_classes": ["SECRET"]}),
            prev_hash: String::new(),
            hash: String::new(),
        };
        s.apply(&mk(0, "DENY"));
        assert!(s.data_classes.is_empty());
        assert_eq!((s.denied, s.egress), (1, 0));
        s.apply(&mk(1, "ALLOW"));
        assert!(s.data_classes.contains("SECRET"));
        assert_eq!((s.actions, s.egress), (2, 1));
    }

    #[test]
    // The session remembers which actions it performed (let through only),
    // and its action rate decays with a one-minute time constant.
    fn performed_actions_and_rate() {
        let mut s = SessionSummary::new("s");
        let mk = |seq, at: &str, tool: &str, decision: &str| Entry {
            seq,
            kind: EntryKind::Action,
            at: at.to_owned(),
            data: json!({"decision": decision, "tool": tool, "operation": "query"}),
            prev_hash: String::new(),
            hash: String::new(),
        };
        s.apply(&mk(0, "2026-11-23T10:00:00.000Z", "db", "ALLOW"));
        s.apply(&mk(1, "2026-11-23T10:00:00.000Z", "crm", "DENY"));
        assert_eq!(s.performed.iter().collect::<Vec<_>>(), ["db.query"]);
        assert!((s.action_rate - 2.0).abs() < 1e-9, "{}", s.action_rate);
        // One time constant later the two earlier actions weigh 2/e.
        s.apply(&mk(2, "2026-11-23T10:01:00.000Z", "db", "ALLOW"));
        assert!((s.action_rate - (1.0 + 2.0 / std::f64::consts::E)).abs() < 1e-9, "{}", s.action_rate);
        // An hour of silence leaves about one.
        s.apply(&mk(3, "2026-11-23T11:01:00.000Z", "db", "ALLOW"));
        assert!((s.action_rate - 1.0).abs() < 1e-6, "{}", s.action_rate);
        // A time that cannot be read counts undecayed and keeps the last time.
        s.apply(&mk(4, "", "db", "ALLOW"));
        assert!((s.action_rate - 2.0).abs() < 1e-6 && s.action_rate_at_ms.is_some());
        // The summary round-trips through JSON exactly (it is compared with
        // the stored one on every decision).
        let back: SessionSummary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
