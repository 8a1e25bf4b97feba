//! Passwords, SCRAM verifiers and the AEAD that stores secrets in the control database.

use crate::domain::error::{Error, ErrorCode, Result};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Environment variable holding the key (64 hex chars or base64 of 32 bytes).
pub const SECRET_KEY_ENV: &str = "DL_TENANCY_SECRET_KEY";

/// The 32-byte key of the AEAD. Never printed.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

fn key_error(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::SecretKey, msg)
}

/// `N` bytes from the OS random number generator (secrets, and ids fronts make).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random number generator");
    b
}

impl SecretKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        SecretKey(b)
    }

    /// Parse 64 hex characters or base64/base64url of 32 bytes.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit()) {
            let mut b = [0u8; 32];
            for (i, chunk) in t.as_bytes().chunks(2).enumerate() {
                b[i] = u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 16).unwrap();
            }
            return Ok(SecretKey(b));
        }
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for e in engines {
            if let Ok(v) = e.decode(t) {
                if let Ok(b) = <[u8; 32]>::try_from(v.as_slice()) {
                    return Ok(SecretKey(b));
                }
            }
        }
        Err(key_error(
            "secret key must be 32 bytes: 64 hex characters or base64",
        ))
    }

    /// Read a key file: 32 raw bytes, or hex/base64 text.
    pub fn read_file(path: &Path) -> Result<Self> {
        let data = fs::read(path).map_err(|e| {
            key_error(format!(
                "cannot read secret key file {}: {e}",
                path.display()
            ))
        })?;
        if let Ok(b) = <[u8; 32]>::try_from(data.as_slice()) {
            return Ok(SecretKey(b));
        }
        SecretKey::parse(&String::from_utf8_lossy(&data))
    }

    /// `$DL_TENANCY_SECRET_KEY`, else `<data_dir>/secret.key`; with `create`, a missing key file
    /// is created (32 random bytes, mode 0600).
    pub fn load(data_dir: &Path, create: bool) -> Result<Self> {
        if let Ok(v) = std::env::var(SECRET_KEY_ENV) {
            if !v.trim().is_empty() {
                return SecretKey::parse(&v);
            }
        }
        let path = data_dir.join("secret.key");
        if !path.exists() {
            if !create {
                return Err(key_error(format!(
                    "no secret key: set {SECRET_KEY_ENV} or run `dl-tenancy local up` to create {}",
                    path.display()
                )));
            }
            fs::create_dir_all(data_dir)?;
            let key = random_bytes::<32>();
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&key)?;
                    f.sync_all()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mode = fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(key_error(format!(
                "secret key file {} must not be readable by group or others (chmod 600)",
                path.display()
            )));
        }
        SecretKey::read_file(&path)
    }

    /// Encrypt with a fresh random nonce; `aad` binds the ciphertext to its owner.
    pub fn encrypt(&self, plaintext: &[u8], aad: &str) -> (Vec<u8>, Vec<u8>) {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let nonce = random_bytes::<12>();
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encryption");
        (nonce.to_vec(), ct)
    }

    pub fn decrypt(&self, nonce: &[u8], ciphertext: &[u8], aad: &str) -> Result<Vec<u8>> {
        if nonce.len() != 12 {
            return Err(key_error("stored secret has a malformed nonce"));
        }
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                key_error(format!(
                    "cannot decrypt the stored secret for {aad}: wrong secret key or tampered data"
                ))
            })
    }

    /// A secret derived from the key for one purpose (HMAC-SHA-256 of `label`): stable
    /// across runs, nothing to store, useless for any other purpose.
    pub(crate) fn derive(&self, label: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let pad = |byte: u8| -> Vec<u8> {
            let mut block = [byte; 64];
            for (b, k) in block.iter_mut().zip(self.0) {
                *b ^= k;
            }
            block.to_vec()
        };
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(label.as_bytes())
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        outer.into()
    }

    pub fn decrypt_string(&self, nonce: &[u8], ciphertext: &[u8], aad: &str) -> Result<String> {
        String::from_utf8(self.decrypt(nonce, ciphertext, aad)?)
            .map_err(|_| key_error("stored secret is not UTF-8"))
    }
}

/// A new password: 32 random bytes, base64url without padding (43 characters).
pub fn random_password() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores, computed here so the plaintext never reaches
/// the server.
pub fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// A new random handle: 16 lowercase hex digits (64 bits).
pub fn new_handle() -> String {
    crate::base::secret::random_bytes::<8>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_aad() {
        let k = SecretKey::from_bytes(random_bytes());
        let (n, c) = k.encrypt(b"hunter2", "ws:a/read/a");
        assert_eq!(k.decrypt(&n, &c, "ws:a/read/a").unwrap(), b"hunter2");
        assert!(k.decrypt(&n, &c, "ws:b/read/a").is_err());
        let other = SecretKey::from_bytes(random_bytes());
        assert_eq!(
            other.decrypt(&n, &c, "ws:a/read/a").unwrap_err().code(),
            "secret_key"
        );
        let (n2, _) = k.encrypt(b"hunter2", "x");
        assert_ne!(n, n2);
    }

    #[test]
    fn key_parsing() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(SecretKey::parse(&hex).unwrap().0[31], 0xff);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(SecretKey::parse(&b64).unwrap().0, [7u8; 32]);
        assert!(SecretKey::parse("short").is_err());
    }

    #[test]
    fn passwords() {
        let p = random_password();
        assert_eq!(p.len(), 43);
        assert_ne!(p, random_password());
        let v = scram_verifier(&p);
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!v.contains(&p));
    }
}
