//! Checkpoints: the log's signed tree heads, in the C2SP formats
//! `tlog-checkpoint` (the body) and `signed-note` (the signature).
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <root hash, standard base64>\n
//! \n
//! — <origin> <base64(key id ‖ Ed25519 signature)>\n
//! ```
//!
//! The signature is Ed25519 over the body (the first three lines with their
//! newlines), by the receipt key; the key's name is the origin, and its key
//! id is the first 4 bytes of `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`.
//! Any C2SP signed-note verifier (Go's `golang.org/x/mod/sumdb/note`, for
//! one) accepts it given [`verifier_key`].

use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::credentials::ReceiptKey;
use crate::tlog::Hash;

/// Largest note accepted. Ours are ~200 bytes; the cap keeps a hostile
/// note from costing more than a page of parsing.
pub const MAX_NOTE_SIZE: usize = 16 * 1024;

/// Most signature lines read from one note.
pub const MAX_NOTE_SIGNATURES: usize = 16;

/// Longest origin (and so key name).
pub const MAX_ORIGIN_LEN: usize = 255;

/// The signed-note signature type of Ed25519.
const ED25519_TYPE: u8 = 0x01;

/// Why a checkpoint note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Not a well-formed signed note or checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// No signature line by a known key verifies.
    #[error("no valid signature on the checkpoint by a known key for `{0}`")]
    Unverified(String),
}

/// A checkpoint's body: which log, how big, what root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (also the signing key's name).
    pub origin: String,
    /// Leaves in the tree.
    pub size: u64,
    /// RFC 9162 root hash of the tree.
    pub root: Hash,
}

/// Whether `origin` may name a log: printable ASCII without spaces or `+`,
/// because it is also the signed-note key name.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN_LEN {
        return Err(format!("must be 1 to {MAX_ORIGIN_LEN} characters"));
    }
    if !origin.bytes().all(|b| b.is_ascii_graphic() && b != b'+') {
        return Err("must be printable ASCII without spaces or `+`".to_owned());
    }
    Ok(())
}

/// The signed-note key id of `key` under `name`.
pub fn note_key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519_TYPE]);
    h.update(key.as_bytes());
    let digest: Hash = h.finalize().into();
    let mut id = [0u8; 4];
    id.copy_from_slice(digest.get(..4).unwrap_or_default());
    id
}

/// The signed-note verifier key: `name+<hex key id>+<base64(0x01 ‖ key)>`.
pub fn verifier_key(name: &str, key: &VerifyingKey) -> String {
    let mut raw = vec![ED25519_TYPE];
    raw.extend_from_slice(key.as_bytes());
    format!("{name}+{}+{}", hex::encode(note_key_id(name, key)), base64::engine::general_purpose::STANDARD.encode(raw))
}

impl Checkpoint {
    /// The note body: the text that is signed.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, base64::engine::general_purpose::STANDARD.encode(self.root))
    }

    /// The signed note, signed by `key` under the origin as key name.
    pub fn sign(&self, key: &ReceiptKey) -> String {
        let body = self.body();
        let mut sig = note_key_id(&self.origin, &key.verifying_key()).to_vec();
        sig.extend_from_slice(&key.sign(body.as_bytes()).to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.origin, base64::engine::general_purpose::STANDARD.encode(sig))
    }

    /// Parse a signed checkpoint note and check that one of `keys` signed
    /// it under the note's origin. Returns the checkpoint and the index in
    /// `keys` of the key whose signature verified. Unknown signatures are
    /// ignored, as signed-note prescribes.
    pub fn open(note: &str, keys: &[VerifyingKey]) -> Result<(Self, usize), NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_owned());
        if note.len() > MAX_NOTE_SIZE {
            return Err(bad("note too large"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("control characters in note"));
        }
        let (body, sigs) = note.rsplit_once("\n\n").ok_or_else(|| bad("no blank line before the signatures"))?;
        let body = format!("{body}\n");
        let checkpoint = Self::parse_body(&body)?;
        let sigs = sigs.strip_suffix('\n').ok_or_else(|| bad("note does not end with a newline"))?;
        let mut verified = None;
        for (i, line) in sigs.split('\n').enumerate() {
            if i >= MAX_NOTE_SIGNATURES {
                return Err(bad("too many signatures"));
            }
            let rest = line.strip_prefix("\u{2014} ").ok_or_else(|| bad("signature line does not start with `— `"))?;
            let (name, b64) = rest.split_once(' ').ok_or_else(|| bad("signature line has no signature"))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("signature is not standard base64"))?;
            if raw.len() < 5 || name.is_empty() || name.contains('+') {
                return Err(bad("malformed signature line"));
            }
            if name != checkpoint.origin || verified.is_some() {
                continue;
            }
            let (id, sig) = raw.split_at(4);
            let Ok(sig) = <[u8; 64]>::try_from(sig) else { continue };
            verified = keys.iter().position(|k| {
                note_key_id(name, k) == id && k.verify_strict(body.as_bytes(), &Signature::from_bytes(&sig)).is_ok()
            });
        }
        match verified {
            Some(i) => Ok((checkpoint, i)),
            None => Err(NoteError::Unverified(checkpoint.origin)),
        }
    }

    /// Parse a checkpoint body (no signatures). Extension lines after the
    /// root are allowed (they are signed) and ignored.
    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::Malformed(m.to_owned());
        let mut lines = body.strip_suffix('\n').ok_or_else(|| bad("body does not end with a newline"))?.split('\n');
        let origin = lines.next().unwrap_or_default();
        check_origin(origin).map_err(|e| bad(&format!("origin {e}")))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("tree size is not a decimal number"));
        }
        let size = size.parse::<u64>().map_err(|_| bad("tree size out of range"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root = base64::engine::general_purpose::STANDARD
            .decode(root)
            .ok()
            .and_then(|r| Hash::try_from(r).ok())
            .ok_or_else(|| bad("root hash is not 32 bytes of standard base64"))?;
        if lines.any(str::is_empty) {
            return Err(bad("empty line in the checkpoint body"));
        }
        Ok(Self { origin: origin.to_owned(), size, root })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn cp() -> Checkpoint {
        Checkpoint { origin: "arbiter.example/log".to_owned(), size: 12, root: crate::tlog::leaf_hash(b"x") }
    }

    #[test]
    // A signed checkpoint opens with its key and not with another.
    fn signed_checkpoint_opens_with_its_key_only() {
        let key = ReceiptKey::generate();
        let other = ReceiptKey::generate();
        let note = cp().sign(&key);
        assert!(note.starts_with("arbiter.example/log\n12\n"));
        let (opened, i) = Checkpoint::open(&note, &[other.verifying_key(), key.verifying_key()]).unwrap();
        assert_eq!((opened, i), (cp(), 1));
        assert!(matches!(Checkpoint::open(&note, &[other.verifying_key()]), Err(NoteError::Unverified(_))));
    }

    #[test]
    // Changing any byte of the note makes it fail to open.
    fn every_altered_byte_fails() {
        let key = ReceiptKey::generate();
        let note = cp().sign(&key).into_bytes();
        for i in 0..note.len() {
            let mut n = note.clone();
            n[i] ^= 0x01;
            let Ok(s) = String::from_utf8(n) else { continue };
            assert!(Checkpoint::open(&s, &[key.verifying_key()]).is_err(), "byte {i} altered still opens");
        }
    }

    #[test]
    // The key id follows C2SP signed-note: SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4],
    // and the verifier key string carries it.
    fn key_id_follows_signed_note() {
        let key = ReceiptKey::generate();
        let vk = key.verifying_key();
        let mut pre = b"arbiter.example/log\n\x01".to_vec();
        pre.extend_from_slice(vk.as_bytes());
        assert_eq!(note_key_id("arbiter.example/log", &vk), Sha256::digest(&pre)[..4]);
        let vkey = verifier_key("arbiter.example/log", &vk);
        let parts: Vec<&str> = vkey.split('+').collect();
        assert_eq!(parts[0], "arbiter.example/log");
        assert_eq!(parts[1], hex::encode(note_key_id("arbiter.example/log", &vk)));
    }

    #[test]
    // Malformed bodies are refused with a reason.
    fn malformed_bodies_are_refused() {
        for body in ["", "o\n", "o\n012\nAAAA\n", "o\nx\nAAAA\n", "has space\n1\nAAAA\n", "o\n1\nnot-base64\n"] {
            assert!(Checkpoint::parse_body(body).is_err(), "{body:?}");
        }
        assert!(check_origin("a+b").is_err());
    }
}
