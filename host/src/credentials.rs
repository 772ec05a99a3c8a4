//! Secrets Arbiter owns: the bearer tokens of its API and the receipt
//! signing key. Generated on first start (mode 0600) unless configured.
//!
//! Tokens are kept only as SHA-256 digests in memory and compared in
//! constant time, so a timing side channel cannot recover them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Errors raised while loading or creating credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A file could not be read, created or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A token file or value is empty or too short.
    #[error("token from `{origin}` is too short: at least 16 characters are required")]
    WeakToken {
        /// Where the token came from.
        origin: String,
    },
    /// A key file is not a PKCS#8 Ed25519 private key.
    #[error("`{path}` is not a PKCS#8 PEM Ed25519 private key: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CredentialError + '_ {
    move |source| CredentialError::Io { path: path.to_owned(), source }
}

/// A bearer token, held as its SHA-256 digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Minimum token length; shorter secrets are refused at load.
    pub const MIN_LEN: usize = 16;

    fn from_secret(secret: &str, origin: &str) -> Result<Self, CredentialError> {
        let secret = secret.trim();
        if secret.len() < Self::MIN_LEN {
            return Err(CredentialError::WeakToken { origin: origin.to_owned() });
        }
        Ok(Self { digest: Sha256::digest(secret.as_bytes()).into() })
    }

    /// True when `presented` is this token. Constant time in the token.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(self.digest.ct_eq(&digest))
    }

    /// Use `inline`, else read `file`, else read or create `default_file`.
    pub fn resolve(inline: Option<&str>, file: Option<&Path>, default_file: &Path) -> Result<Self, CredentialError> {
        if let Some(secret) = inline {
            return Self::from_secret(secret, "config");
        }
        let path = file.unwrap_or(default_file);
        if file.is_none() && !path.exists() {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private(path, format!("{secret}\n").as_bytes())?;
        }
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        Self::from_secret(&text, &path.display().to_string())
    }
}

/// Create `path` with mode 0600 and write `bytes`; refuse to overwrite.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CredentialError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_err(path))?;
    file.write_all(bytes).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))?;
    Ok(())
}

/// The receipt signing key and its id.
pub struct ReceiptKey {
    signing: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for ReceiptKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptKey").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl ReceiptKey {
    /// File name of the active key under `<data-dir>/keys/`.
    pub const FILE_NAME: &'static str = "receipt-signing.pem";

    /// Generate a fresh key.
    pub fn generate() -> Self {
        Self::from_signing(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    fn from_signing(signing: SigningKey) -> Self {
        let key_id = key_id(&signing.verifying_key());
        Self { signing, key_id }
    }

    /// Load `path`, or create it (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, CredentialError> {
        if !path.exists() {
            let key = Self::generate();
            key.write(path)?;
            return Ok(key);
        }
        Self::load(path)
    }

    /// Load a PKCS#8 PEM key, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, CredentialError> {
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(CredentialError::BadKey {
                path: path.to_owned(),
                reason: "group or others may read it; chmod 600".to_owned(),
            });
        }
        let pem = fs::read_to_string(path).map_err(io_err(path))?;
        let signing = SigningKey::from_pkcs8_pem(&pem)
            .map_err(|e| CredentialError::BadKey { path: path.to_owned(), reason: e.to_string() })?;
        Ok(Self::from_signing(signing))
    }

    /// Write the key as PKCS#8 PEM with mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), CredentialError> {
        let pem = self
            .signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| CredentialError::BadKey { path: path.to_owned(), reason: e.to_string() })?;
        write_private(path, pem.as_bytes())
    }

    /// The key id named in receipts: `ed25519:` and 16 hex digits of the
    /// SHA-256 of the public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Sign `message` (Ed25519, deterministic).
    pub fn sign(&self, message: &[u8]) -> ed25519_dalek::Signature {
        use ed25519_dalek::Signer;
        self.signing.sign(message)
    }
}

/// Key id of a public key: `ed25519:<first 16 hex of sha256(key)>`.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("ed25519:{}", hex::encode(digest.get(..8).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    // A generated token file is private and its content authenticates.
    fn generated_token_is_private_and_matches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        let token = Token::resolve(None, None, &path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let secret = fs::read_to_string(&path).unwrap();
        assert!(token.matches(secret.trim()));
        assert!(!token.matches("wrong-token-wrong-token"));
        // Reloading gives the same token.
        assert!(Token::resolve(None, None, &path).unwrap().matches(secret.trim()));
    }

    #[test]
    // A short inline token is refused at load.
    fn short_token_is_refused() {
        assert!(Token::resolve(Some("short"), None, Path::new("/nonexistent")).is_err());
    }

    #[test]
    // A key survives a write and reload, and a world-readable key is refused.
    fn key_round_trips_and_refuses_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join(ReceiptKey::FILE_NAME);
        let key = ReceiptKey::load_or_create(&path).unwrap();
        let again = ReceiptKey::load(&path).unwrap();
        assert_eq!(key.key_id(), again.key_id());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(ReceiptKey::load(&path).is_err());
    }
}
