//! Offline receipt bundles: one file proving that a receipt is in the log.
//!
//! A bundle holds the receipt, its leaf index, the RFC 9162 inclusion proof
//! of its leaf against a signed checkpoint, that checkpoint, and the public
//! keys that signed the receipt and the checkpoint. [`verify`] checks all of
//! it with no network; `docs/receipts.md` specifies the format so that
//! anyone can do the same with JCS, SHA-256 and Ed25519.
//!
//! The file is written as its own RFC 8785 (JCS) bytes plus a newline, and
//! [`verify`] refuses any other spelling: every byte of an accepted file is
//! then covered by a check, so changing one always fails.

use std::collections::HashMap;

use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::{Checkpoint, NoteError};
use crate::store::{Store, StoreError};
use crate::tlog::Hash;

/// The `format` member of bundles this build writes and reads.
pub const FORMAT: &str = "arbiter.receipt-bundle/v1";

/// Largest bundle read. A receipt holds at most one request body (the
/// ingress limit is at most 64 MiB) plus its JSON escaping; anything larger
/// is not a bundle Arbiter wrote.
pub const MAX_BUNDLE_SIZE: usize = 256 * 1024 * 1024;

/// Longest inclusion proof: one hash per level of a 2^64-leaf tree.
const MAX_PROOF_LEN: usize = 64;

/// Most keys in a bundle (the receipt's and the checkpoint's).
const MAX_KEYS: usize = 8;

/// A bundle as serialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// [`FORMAT`].
    pub format: String,
    /// The receipt, as served by `GET /v1/receipts/{id}`.
    pub receipt: Value,
    /// Its leaf index in the log (= `receipt.chain.seq`).
    pub leaf_index: u64,
    /// RFC 9162 inclusion proof, leaf side first, standard base64 each.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint note the proof leads to.
    pub checkpoint: String,
    /// Public keys, as `GET /v1/keys` lists them.
    pub keys: Vec<BundleKey>,
}

/// One public key in a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleKey {
    /// `ed25519:` + 16 hex digits of SHA-256 of the public key.
    pub key_id: String,
    /// `Ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, standard base64.
    pub public_key: String,
}

impl BundleKey {
    /// The bundle entry of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        Self {
            key_id: crate::credentials::key_id(key),
            algorithm: "Ed25519".to_owned(),
            public_key: base64::engine::general_purpose::STANDARD.encode(key.as_bytes()),
        }
    }
}

/// Why a bundle could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file is larger than [`MAX_BUNDLE_SIZE`].
    #[error("bundle is larger than {MAX_BUNDLE_SIZE} bytes")]
    TooLarge,
    /// Not JSON of the bundle's shape.
    #[error("not a receipt bundle: {0}")]
    Parse(String),
    /// Valid JSON, but not the canonical bytes the bundle was written as.
    #[error("the bundle is not in its canonical (RFC 8785) form: it was altered or re-encoded")]
    NotCanonical,
    /// A key entry is malformed, inconsistent or not trusted.
    #[error("key: {0}")]
    Key(String),
    /// The receipt's signature or shape is wrong.
    #[error("receipt: {0}")]
    Receipt(String),
    /// The checkpoint does not open.
    #[error(transparent)]
    Checkpoint(#[from] NoteError),
    /// The inclusion proof does not lead from the receipt to the root.
    #[error("inclusion proof: {0}")]
    Inclusion(String),
    /// No checkpoint covers the receipt yet.
    #[error("receipt `{0}` is not in a checkpoint yet")]
    NotCheckpointed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a verified bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The receipt's id.
    pub receipt_id: String,
    /// Its leaf index.
    pub leaf_index: u64,
    /// The log's origin.
    pub origin: String,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The checkpoint's root hash (standard base64).
    pub root: String,
    /// Key id that signed the receipt.
    pub receipt_key: String,
    /// Key id that signed the checkpoint.
    pub checkpoint_key: String,
}

impl Bundle {
    /// The bundle's file bytes: RFC 8785 canonical JSON and a newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        let mut bytes = serde_jcs::to_vec(self).map_err(|e| BundleError::Parse(e.to_string()))?;
        bytes.push(b'\n');
        Ok(bytes)
    }
}

/// Bundle the receipt `receipt_id` with the latest checkpoint. `keyring`
/// holds every public key the log has used. `Ok(None)`: no such receipt;
/// [`BundleError::NotCheckpointed`]: the latest checkpoint predates it (make
/// one with [`Store::checkpoint_now`] and retry).
pub fn assemble(store: &Store, receipt_id: &str, keyring: &[VerifyingKey]) -> Result<Option<Bundle>, BundleError> {
    let Some((seq, leaf)) = store.receipt_leaf(receipt_id)? else {
        return Ok(None);
    };
    let (size, note) = match store.latest_checkpoint()? {
        Some((size, note)) if size > seq => (size, note),
        _ => return Err(BundleError::NotCheckpointed(receipt_id.to_owned())),
    };
    let proof = store.inclusion_proof(seq, size)?;
    let receipt: Value = serde_json::from_slice(&leaf).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let (_, signer) = Checkpoint::open(&note, keyring)?;
    let receipt_key = receipt.pointer("/signature/key_id").and_then(Value::as_str).unwrap_or_default();
    let mut keys: Vec<BundleKey> = keyring.iter().map(BundleKey::of).filter(|k| k.key_id == receipt_key).collect();
    if let Some(k) = keyring.get(signer).map(BundleKey::of)
        && !keys.contains(&k)
    {
        keys.push(k);
    }
    let bundle = Bundle {
        format: FORMAT.to_owned(),
        receipt,
        leaf_index: seq,
        inclusion_proof: proof.iter().map(|h| base64::engine::general_purpose::STANDARD.encode(h)).collect(),
        checkpoint: note,
        keys,
    };
    // A bundle that would not verify is a store fault, not a bundle.
    verify(&bundle.to_bytes()?, None)
        .map_err(|e| StoreError::Corrupt(format!("the stored log does not prove receipt `{receipt_id}`: {e}")))?;
    Ok(Some(bundle))
}

/// Verify a bundle file offline: its canonical form, the receipt's
/// signature, the checkpoint's signature, and the inclusion proof of the
/// receipt's leaf against the checkpoint's root. With `trusted` (a
/// `/v1/keys` document obtained independently), every key must be one of
/// those; without it the bundle's own keys are used, which proves
/// consistency but not *whose* log it is.
pub fn verify(bytes: &[u8], trusted: Option<&HashMap<String, VerifyingKey>>) -> Result<Verified, BundleError> {
    if bytes.len() > MAX_BUNDLE_SIZE {
        return Err(BundleError::TooLarge);
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| BundleError::Parse(e.to_string()))?;
    let canonical = serde_jcs::to_vec(&value).map_err(|e| BundleError::Parse(e.to_string()))?;
    if bytes != canonical.as_slice() && bytes.strip_suffix(b"\n") != Some(canonical.as_slice()) {
        return Err(BundleError::NotCanonical);
    }
    let bundle: Bundle = serde_json::from_value(value).map_err(|e| BundleError::Parse(e.to_string()))?;
    if bundle.format != FORMAT {
        return Err(BundleError::Parse(format!("unknown format `{}` (expected `{FORMAT}`)", bundle.format)));
    }

    let keys = bundle_keys(&bundle.keys, trusted)?;
    let receipt_key = crate::receipts::verify_signature(&bundle.receipt, &keys).map_err(BundleError::Receipt)?;
    let seq = bundle.receipt.pointer("/chain/seq").and_then(Value::as_u64);
    if seq != Some(bundle.leaf_index) {
        return Err(BundleError::Receipt(format!("leaf_index {} is not the receipt's chain.seq", bundle.leaf_index)));
    }
    let leaf = serde_jcs::to_vec(&bundle.receipt).map_err(|e| BundleError::Receipt(e.to_string()))?;

    let ids: Vec<&String> = keys.keys().collect();
    let list: Vec<VerifyingKey> = ids.iter().filter_map(|id| keys.get(*id).copied()).collect();
    let (checkpoint, signer) = Checkpoint::open(&bundle.checkpoint, &list)?;
    if bundle.inclusion_proof.len() > MAX_PROOF_LEN {
        return Err(BundleError::Inclusion("too many hashes".to_owned()));
    }
    let proof = bundle
        .inclusion_proof
        .iter()
        .map(|h| {
            base64::engine::general_purpose::STANDARD
                .decode(h)
                .ok()
                .and_then(|raw| Hash::try_from(raw).ok())
                .ok_or_else(|| BundleError::Inclusion("a hash is not 32 bytes of standard base64".to_owned()))
        })
        .collect::<Result<Vec<Hash>, _>>()?;
    crate::tlog::verify_inclusion(&leaf, bundle.leaf_index, checkpoint.size, &checkpoint.root, &proof)
        .map_err(|e| BundleError::Inclusion(e.to_string()))?;
    Ok(Verified {
        receipt_id: bundle.receipt.get("receipt_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
        leaf_index: bundle.leaf_index,
        origin: checkpoint.origin,
        tree_size: checkpoint.size,
        root: base64::engine::general_purpose::STANDARD.encode(checkpoint.root),
        receipt_key,
        checkpoint_key: ids.get(signer).map(|s| (*s).clone()).unwrap_or_default(),
    })
}

/// The bundle's keys by id, each checked: Ed25519, 32 bytes, an id that is
/// its own, and (with `trusted`) the same key as the trusted one of that id.
fn bundle_keys(
    keys: &[BundleKey],
    trusted: Option<&HashMap<String, VerifyingKey>>,
) -> Result<HashMap<String, VerifyingKey>, BundleError> {
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(BundleError::Key(format!("a bundle carries 1 to {MAX_KEYS} keys")));
    }
    let doc = serde_json::json!({"keys": keys});
    let parsed = crate::receipts::parse_keys(&doc).map_err(BundleError::Key)?;
    if parsed.len() != keys.len() {
        return Err(BundleError::Key("duplicate key ids".to_owned()));
    }
    for (id, key) in &parsed {
        if crate::credentials::key_id(key) != *id {
            return Err(BundleError::Key(format!("`{id}` is not the id of its public key")));
        }
        if let Some(trusted) = trusted
            && trusted.get(id) != Some(key)
        {
            return Err(BundleError::Key(format!("`{id}` is not one of the trusted keys")));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::credentials::ReceiptKey;
    use crate::receipts::{ReceiptBody, ReceiptDraft};
    use crate::store::LogOptions;

    fn draft(i: usize, tool: &str) -> ReceiptDraft {
        let body = ReceiptBody {
            action: json!({"tool": tool, "parameters": {"command": format!("echo {i}")}}),
            decision: json!({"result": "ALLOW"}),
            context_hash: "sha256:00".to_owned(),
            session: json!({"actions": i}),
            approval: Value::Null,
            deferral: Value::Null,
            vendor: json!({"integration": "test"}),
            tenant: "default".to_owned(),
        };
        ReceiptDraft::new(format!("r{i}"), body, "s".to_owned(), "a".to_owned(), "ALLOW".to_owned(), None).unwrap()
    }

    fn options() -> LogOptions {
        LogOptions {
            origin: Some("test.example/log".to_owned()),
            checkpoint_every: 1_000_000,
            checkpoint_interval: std::time::Duration::from_secs(3600),
        }
    }

    async fn store_with(dir: &std::path::Path, key: &Arc<ReceiptKey>, tools: &[&str]) -> Store {
        let store = Store::open_with(dir, key.clone(), 64, options()).unwrap();
        for (i, tool) in tools.iter().enumerate() {
            store.append_receipt(draft(i, tool)).await.unwrap();
        }
        store
    }

    fn trusted(key: &ReceiptKey) -> HashMap<String, VerifyingKey> {
        HashMap::from([(key.key_id().to_owned(), key.verifying_key())])
    }

    #[tokio::test]
    // A bundle verifies offline, with the trusted keys and without them, and
    // not with another key set.
    async fn bundle_verifies_offline() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(ReceiptKey::generate());
        let store = store_with(dir.path(), &key, &["shell"; 11]).await;
        assert!(matches!(assemble(&store, "r3", &[key.verifying_key()]), Err(BundleError::NotCheckpointed(_))));
        assert_eq!(store.checkpoint_now().await.unwrap(), 11);
        for i in [0, 3, 10] {
            let bundle = assemble(&store, &format!("r{i}"), &[key.verifying_key()]).unwrap().unwrap();
            let bytes = bundle.to_bytes().unwrap();
            let v = verify(&bytes, Some(&trusted(&key))).unwrap();
            assert_eq!((v.leaf_index, v.tree_size, v.origin.as_str()), (i, 11, "test.example/log"));
            verify(&bytes, None).unwrap();
            let other = ReceiptKey::generate();
            assert!(matches!(verify(&bytes, Some(&trusted(&other))), Err(BundleError::Key(_))));
        }
        assert!(assemble(&store, "nope", &[key.verifying_key()]).unwrap().is_none());
    }

    #[tokio::test]
    // Flipping any bit of any byte of a bundle makes verification fail.
    async fn every_altered_byte_fails() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(ReceiptKey::generate());
        let store = store_with(dir.path(), &key, &["shell"; 6]).await;
        store.checkpoint_now().await.unwrap();
        let bytes = assemble(&store, "r4", &[key.verifying_key()]).unwrap().unwrap().to_bytes().unwrap();
        verify(&bytes, None).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x20, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(verify(&b, None).is_err(), "byte {i} ^ {bit:#x} still verifies");
            }
        }
    }

    #[tokio::test]
    // A history rewritten from one receipt on (same key, same length and
    // more) is not consistent with a checkpoint of the original.
    async fn rewritten_history_breaks_consistency() {
        let key = Arc::new(ReceiptKey::generate());
        let a_dir = tempfile::tempdir().unwrap();
        let a = store_with(a_dir.path(), &key, &["shell"; 10]).await;
        a.checkpoint_now().await.unwrap();
        let (old_size, old_note) = a.latest_checkpoint().unwrap().unwrap();
        let (old, _) = Checkpoint::open(&old_note, &[key.verifying_key()]).unwrap();
        // The honest log grows and stays consistent.
        for i in 10..15 {
            a.append_receipt(draft(i, "shell")).await.unwrap();
        }
        let root = a.root_at(15).unwrap();
        crate::tlog::verify_consistency(old_size, &old.root, 15, &root, &a.consistency_proof(old_size, 15).unwrap())
            .unwrap();
        // The same history with receipt 3 changed, rebuilt under the same key.
        let b_dir = tempfile::tempdir().unwrap();
        let mut tools = ["shell"; 15];
        tools[3] = "write_file";
        let b = store_with(b_dir.path(), &key, &tools).await;
        let root = b.root_at(15).unwrap();
        let proof = b.consistency_proof(old_size, 15).unwrap();
        assert!(crate::tlog::verify_consistency(old_size, &old.root, 15, &root, &proof).is_err());
        assert!(crate::tlog::verify_consistency(old_size, &old.root, 10, &b.root_at(10).unwrap(), &[]).is_err());
    }

    #[tokio::test]
    // Checkpoints come every N receipts, and the log survives a reopen
    // without being rebuilt: the proofs after reopening verify.
    async fn checkpoints_every_n_and_log_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(ReceiptKey::generate());
        let every = LogOptions { checkpoint_every: 4, ..options() };
        {
            let store = Store::open_with(dir.path(), key.clone(), 1, every.clone()).unwrap();
            for i in 0..9 {
                store.append_receipt(draft(i, "shell")).await.unwrap();
            }
            assert_eq!(store.latest_checkpoint().unwrap().unwrap().0, 8);
            assert!(store.checkpoint(4).unwrap().is_some());
            // The directory is locked while the store is open.
            assert!(matches!(Store::open_with(dir.path(), key.clone(), 1, every.clone()), Err(StoreError::Refused(_))));
        }
        let store = Store::open_with(dir.path(), key.clone(), 1, every).unwrap();
        store.append_receipt(draft(9, "shell")).await.unwrap();
        assert_eq!(store.checkpoint_now().await.unwrap(), 10);
        let bundle = assemble(&store, "r9", &[key.verifying_key()]).unwrap().unwrap();
        verify(&bundle.to_bytes().unwrap(), Some(&trusted(&key))).unwrap();
        // Another origin for a non-empty log is refused.
        drop(store);
        let other = LogOptions { origin: Some("elsewhere/log".to_owned()), ..options() };
        let refused = Store::open_with(dir.path(), key, 1, other);
        assert!(matches!(&refused, Err(StoreError::Refused(m)) if m.contains("origin")), "{:?}", refused.err());
    }
}
