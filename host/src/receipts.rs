//! Receipts: the signed, hash-chained record of every decision.
//!
//! A receipt is JSON. Its signature is Ed25519 over the RFC 8785 (JCS)
//! canonical bytes of the receipt without its `signature` member; `value` is
//! standard base64. `chain.prev_hash` is the hex SHA-256 of the previous
//! receipt's JCS bytes *including* its signature (genesis: 64 zeros), so the
//! log cannot be reordered, shortened in the middle or rewritten without the
//! key. Anyone with the public key (`GET /v1/keys`) can check both offline;
//! [`verify_receipts`] is that check.

use std::collections::HashMap;

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::context::{EntryDraft, GENESIS};
use crate::credentials::ReceiptKey;

/// The `version` member of receipts this build writes.
pub const RECEIPT_VERSION: &str = "arbiter.receipt/v1";

/// A receipt before the writer sequences and signs it.
///
/// Its members are canonicalised (JCS) when the draft is made, on the
/// request's own thread; the single writer thread only adds the members it
/// owns (`issued_at`, `chain`, `context.session_seq`) and signs. A JCS object
/// is its members' canonical bytes in key order, so assembling pre-encoded
/// members gives exactly the bytes of canonicalising the whole receipt.
#[derive(Debug, Clone)]
pub struct ReceiptDraft {
    /// Pre-assigned id (the vendor reply may already name it).
    pub receipt_id: String,
    /// Canonical members: `action`, `approval`, `decision`, `deferral`,
    /// `receipt_id`, `tenant`, `vendor`, `version`.
    members: Vec<(&'static str, Vec<u8>)>,
    /// `context.context_hash`.
    context_hash: String,
    /// `context.session`, canonical.
    session_view: Vec<u8>,
    /// Session the receipt belongs to (index key).
    pub session: String,
    /// Acting agent (index key).
    pub agent: String,
    /// Decision spelling (index key).
    pub decision: String,
    /// The session-log entry recording the decided action, appended in the
    /// same batch; its seq goes into `context.session_seq`.
    pub entry: Option<EntryDraft>,
    /// Approval / deferral records `(id, JSON)` this receipt creates or
    /// resolves, stored in the same batch: a record never changes without
    /// the signed receipt that says so.
    pub holds: Vec<(String, Vec<u8>)>,
}

/// The body members of a receipt that the pipeline provides.
#[derive(Debug)]
pub struct ReceiptBody {
    /// The canonical action.
    pub action: Value,
    /// The decision object.
    pub decision: Value,
    /// `context.context_hash`.
    pub context_hash: String,
    /// `context.session`: the session as the policies saw it.
    pub session: Value,
    /// Approval record (null until approvals exist).
    pub approval: Value,
    /// Deferral record (null until deferrals exist).
    pub deferral: Value,
    /// Vendor facts and the reply sent.
    pub vendor: Value,
    /// The tenant the decision belongs to (see `crate::tenants`).
    pub tenant: String,
}

impl ReceiptDraft {
    /// Canonicalise `body` into a draft.
    pub fn new(
        receipt_id: String,
        body: ReceiptBody,
        session: String,
        agent: String,
        decision: String,
        entry: Option<EntryDraft>,
    ) -> Result<Self, SealError> {
        let jcs = |v: &Value| serde_jcs::to_vec(v).map_err(|e| SealError::Canonical(e.to_string()));
        let members = vec![
            ("action", jcs(&body.action)?),
            ("approval", jcs(&body.approval)?),
            ("decision", jcs(&body.decision)?),
            ("deferral", jcs(&body.deferral)?),
            ("receipt_id", jcs(&Value::String(receipt_id.clone()))?),
            ("tenant", jcs(&Value::String(body.tenant))?),
            ("vendor", jcs(&body.vendor)?),
            ("version", jcs(&Value::String(RECEIPT_VERSION.to_owned()))?),
        ];
        let session_view = jcs(&body.session)?;
        Ok(Self {
            receipt_id,
            members,
            context_hash: body.context_hash,
            session_view,
            session,
            agent,
            decision,
            entry,
            holds: Vec::new(),
        })
    }
}

/// Chain position handed to [`seal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Seq the next receipt gets.
    pub next_seq: u64,
    /// Hash of the last receipt (GENESIS when empty).
    pub prev_hash: String,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis() -> Self {
        Self { next_seq: 0, prev_hash: GENESIS.to_owned() }
    }
}

/// Errors while sealing a receipt.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The receipt could not be canonicalised.
    #[error("cannot canonicalise receipt: {0}")]
    Canonical(String),
}

/// JCS bytes of an object from canonical members. Keys are ASCII, so byte
/// order is JCS's UTF-16 order.
fn assemble(members: &mut [(&'static str, Vec<u8>)]) -> Vec<u8> {
    members.sort_by(|a, b| a.0.cmp(b.0));
    let len = members.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
    }
    out.push(b'}');
    out
}

/// Sequence and sign a draft: returns the receipt's JCS bytes (what is stored
/// and hashed into the chain) and advances `head`. `session_entry` is the
/// seq and hash of the action's session-log entry, which the signature then
/// covers.
pub fn seal(
    draft: &ReceiptDraft,
    issued_at: &str,
    session_entry: Option<(u64, &str)>,
    head: &mut ChainHead,
    key: &ReceiptKey,
) -> Result<Vec<u8>, SealError> {
    let jcs = |v: &Value| serde_jcs::to_vec(v).map_err(|e| SealError::Canonical(e.to_string()));
    let mut members = draft.members.clone();
    let mut context = [
        ("context_hash", jcs(&Value::String(draft.context_hash.clone()))?),
        ("session", draft.session_view.clone()),
        ("session_seq", jcs(&json!(session_entry.map(|(seq, _)| seq)))?),
        ("session_entry_hash", jcs(&json!(session_entry.map(|(_, hash)| hash)))?),
    ];
    members.push(("context", assemble(&mut context)));
    members.push(("issued_at", jcs(&Value::String(issued_at.to_owned()))?));
    members.push(("chain", jcs(&json!({"seq": head.next_seq, "prev_hash": head.prev_hash}))?));
    let unsigned = assemble(&mut members);
    let signature = key.sign(&unsigned);
    members.push((
        "signature",
        jcs(&json!({
            "algorithm": "Ed25519",
            "key_id": key.key_id(),
            "value": base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()),
        }))?,
    ));
    let bytes = assemble(&mut members);
    head.next_seq += 1;
    head.prev_hash = hex::encode(Sha256::digest(&bytes));
    Ok(bytes)
}

/// Why a receipt failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receipt `{receipt_id}` (seq {seq}): {problem}")]
pub struct VerifyFailure {
    /// Its id, or `?` when missing.
    pub receipt_id: String,
    /// Its chain seq, or -1 when missing.
    pub seq: i64,
    /// Position in the input (0-based).
    pub index: usize,
    /// What failed.
    pub problem: String,
}

/// Result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Receipts whose signature verified.
    pub receipts: usize,
    /// Chain links checked (pairs of consecutive seqs).
    pub links: usize,
    /// Gaps in seq (receipts missing from the input).
    pub gaps: usize,
}

/// Parse a `/v1/keys` body into `key_id → key`.
pub fn parse_keys(keys: &Value) -> Result<HashMap<String, VerifyingKey>, String> {
    let list = keys.get("keys").and_then(Value::as_array).ok_or("keys file has no `keys` array")?;
    let mut out = HashMap::new();
    for k in list {
        let id = k.get("key_id").and_then(Value::as_str).ok_or("a key has no `key_id`")?;
        if k.get("algorithm").and_then(Value::as_str) != Some("Ed25519") {
            return Err(format!("key `{id}` is not Ed25519"));
        }
        let b64 = k.get("public_key").and_then(Value::as_str).ok_or(format!("key `{id}` has no `public_key`"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("key `{id}`: public_key is not base64: {e}"))?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| format!("key `{id}`: public_key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|e| format!("key `{id}`: {e}"))?;
        out.insert(id.to_owned(), key);
    }
    Ok(out)
}

/// Check every signature, and the chain link between every pair of
/// receipts with consecutive seqs (receipts are taken in seq order).
pub fn verify_receipts(
    receipts: &[Value],
    keys: &HashMap<String, VerifyingKey>,
) -> Result<VerifyReport, VerifyFailure> {
    let mut ordered: Vec<(usize, &Value)> = receipts.iter().enumerate().collect();
    ordered.sort_by_key(|(_, r)| r.pointer("/chain/seq").and_then(Value::as_u64).unwrap_or(u64::MAX));
    let mut report = VerifyReport { receipts: 0, links: 0, gaps: 0 };
    let mut prev: Option<(u64, String)> = None;
    for (index, receipt) in ordered {
        let fail = |problem: String| VerifyFailure {
            receipt_id: receipt.get("receipt_id").and_then(Value::as_str).unwrap_or("?").to_owned(),
            seq: receipt.pointer("/chain/seq").and_then(Value::as_i64).unwrap_or(-1),
            index,
            problem,
        };
        let seq =
            receipt.pointer("/chain/seq").and_then(Value::as_u64).ok_or_else(|| fail("no chain.seq".to_owned()))?;
        let prev_hash = receipt
            .pointer("/chain/prev_hash")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("no chain.prev_hash".to_owned()))?;
        verify_signature(receipt, keys).map_err(fail)?;
        report.receipts += 1;
        if seq == 0 && prev_hash != GENESIS {
            return Err(fail("first receipt's prev_hash is not the genesis hash".to_owned()));
        }
        if let Some((pseq, phash)) = &prev {
            if seq == *pseq {
                return Err(fail(format!("duplicate chain.seq {seq}")));
            } else if seq == pseq + 1 {
                if prev_hash != phash {
                    return Err(fail("chain broken: prev_hash is not the hash of the previous receipt".to_owned()));
                }
                report.links += 1;
            } else {
                report.gaps += 1;
            }
        }
        let bytes = serde_jcs::to_vec(receipt).map_err(|e| fail(format!("cannot canonicalise: {e}")))?;
        prev = Some((seq, hex::encode(Sha256::digest(&bytes))));
    }
    Ok(report)
}

/// Check one receipt's signature; returns the id of the key that made it.
pub fn verify_signature(receipt: &Value, keys: &HashMap<String, VerifyingKey>) -> Result<String, String> {
    let obj = receipt.as_object().ok_or("not a JSON object")?;
    let sig = obj.get("signature").ok_or("no signature")?;
    if sig.get("algorithm").and_then(Value::as_str) != Some("Ed25519") {
        return Err("signature algorithm is not Ed25519".to_owned());
    }
    let key_id = sig.get("key_id").and_then(Value::as_str).ok_or("signature has no key_id")?;
    let key = keys.get(key_id).ok_or(format!("unknown key `{key_id}`"))?;
    let value = sig.get("value").and_then(Value::as_str).ok_or("signature has no value")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|_| "signature value is not base64".to_owned())?;
    let raw: [u8; 64] = raw.try_into().map_err(|_| "signature is not 64 bytes".to_owned())?;
    let mut unsigned = obj.clone();
    unsigned.remove("signature");
    let bytes = serde_jcs::to_vec(&Value::Object(unsigned)).map_err(|e| format!("cannot canonicalise: {e}"))?;
    key.verify_strict(&bytes, &Signature::from_bytes(&raw))
        .map_err(|_| "signature does not verify (the receipt was altered or signed by another key)".to_owned())?;
    Ok(key_id.to_owned())
}

/// The `/v1/keys` body for a key.
pub fn keys_document(key: &ReceiptKey) -> Value {
    json!({"keys": [{
        "key_id": key.key_id(),
        "algorithm": "Ed25519",
        "public_key": base64::engine::general_purpose::STANDARD.encode(key.verifying_key().as_bytes()),
    }]})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn draft(n: usize) -> ReceiptDraft {
        let body = ReceiptBody {
            action: json!({"tool": "shell", "parameters": {"b": 1, "a": "é\u{1F600}", "z": [1.5, null]},
                           "requester_context": {"session": format!("s{n}")}}),
            decision: json!({"result": "ALLOW", "policy": {"hash": "sha256:00"}}),
            context_hash: "sha256:11".to_owned(),
            session: json!({"actions": n, "data_classes": ["PII"], "untrusted_input": false}),
            approval: Value::Null,
            deferral: Value::Null,
            vendor: json!({"integration": "x", "reply": {"status": 200, "body": {"vendor": 1}}}),
            tenant: "default".to_owned(),
        };
        ReceiptDraft::new(format!("r{n}"), body, "s".to_owned(), "a".to_owned(), "ALLOW".to_owned(), None).unwrap()
    }

    #[test]
    // The tenant is a signed member: a receipt written before tenants (no
    // `tenant`) verifies as before, and adding or changing one breaks it.
    fn tenant_is_signed_and_optional() {
        let key = ReceiptKey::generate();
        let keys = parse_keys(&keys_document(&key)).unwrap();
        let bytes = seal(&draft(0), "2026-11-23T00:00:00.000Z", None, &mut ChainHead::genesis(), &key).unwrap();
        let mut receipt: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(receipt["tenant"], "default");
        verify_receipts(std::slice::from_ref(&receipt), &keys).unwrap();
        let mut moved = receipt.clone();
        moved["tenant"] = json!("acme");
        assert!(verify_receipts(&[moved], &keys).is_err());
        // As an older build signed it: no `tenant` member at all.
        let o = receipt.as_object_mut().unwrap();
        o.remove("tenant");
        o.remove("signature");
        let signature = key.sign(&serde_jcs::to_vec(&receipt).unwrap());
        receipt["signature"] = json!({"algorithm": "Ed25519", "key_id": key.key_id(),
            "value": base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())});
        verify_receipts(std::slice::from_ref(&receipt), &keys).unwrap();
        receipt["tenant"] = json!("default");
        assert!(verify_receipts(&[receipt], &keys).is_err());
    }

    #[test]
    // Assembling pre-canonicalised members gives the JCS bytes of the whole receipt.
    fn sealed_bytes_are_jcs_of_the_whole_receipt() {
        let key = ReceiptKey::generate();
        let bytes =
            seal(&draft(0), "2026-11-23T00:00:00.000Z", Some((3, "ab")), &mut ChainHead::genesis(), &key).unwrap();
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(serde_jcs::to_vec(&value).unwrap(), bytes);
        assert_eq!(value["context"]["session_seq"], json!(3));
        assert_eq!(value["version"], json!(RECEIPT_VERSION));
    }

    fn log(n: usize, key: &ReceiptKey) -> Vec<Value> {
        let mut head = ChainHead::genesis();
        (0..n)
            .map(|i| {
                serde_json::from_slice(&seal(&draft(i), "2026-11-23T00:00:00.000Z", None, &mut head, key).unwrap())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    // A sealed log verifies with the published key.
    fn sealed_log_verifies() {
        let key = ReceiptKey::generate();
        let keys = parse_keys(&keys_document(&key)).unwrap();
        let report = verify_receipts(&log(4, &key), &keys).unwrap();
        assert_eq!((report.receipts, report.links, report.gaps), (4, 3, 0));
    }

    #[test]
    // Changing the requester context or the policy hash breaks the signature.
    fn altered_fields_fail() {
        let key = ReceiptKey::generate();
        let keys = parse_keys(&keys_document(&key)).unwrap();
        for pointer in ["/action/requester_context/session", "/decision/policy/hash"] {
            let mut receipts = log(3, &key);
            *receipts[1].pointer_mut(pointer).unwrap() = json!("tampered");
            let err = verify_receipts(&receipts, &keys).unwrap_err();
            assert_eq!(err.receipt_id, "r1", "{pointer}");
        }
    }

    #[test]
    // Re-signing a receipt with another key is detected by the chain or key id.
    fn other_key_fails() {
        let key = ReceiptKey::generate();
        let other = ReceiptKey::generate();
        let keys = parse_keys(&keys_document(&key)).unwrap();
        assert!(verify_receipts(&log(2, &other), &keys).is_err());
    }

    #[test]
    // Removing a receipt from the middle is reported as a gap, not a pass of the link.
    fn reordered_chain_fails() {
        let key = ReceiptKey::generate();
        let keys = parse_keys(&keys_document(&key)).unwrap();
        let mut receipts = log(3, &key);
        receipts.remove(1);
        assert_eq!(verify_receipts(&receipts, &keys).unwrap().gaps, 1);
    }
}
