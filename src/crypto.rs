//! Seals WhatsApp access tokens at rest with AES-256-GCM. A sealed token is
//! `nonce (12 bytes) || ciphertext`, bound to its phone-number ID so a sealed
//! token copied onto another sender's row does not open.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// From the base64 form of a 32-byte key.
    pub fn from_base64(key: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(key.trim())
            .map_err(|_| "ACTIOND_ENCRYPTION_KEY must be base64 (e.g. from `openssl rand -base64 32`)".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!("ACTIOND_ENCRYPTION_KEY must decode to 32 bytes, it decodes to {}", bytes.len()));
        }
        Ok(Self { cipher: Aes256Gcm::new_from_slice(&bytes).expect("32-byte key") })
    }

    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    pub fn seal(&self, plaintext: &str, bound_to: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext.as_bytes(), aad: bound_to.as_bytes() })
            .expect("AES-GCM encryption of a short token cannot fail");
        [nonce.as_slice(), &ciphertext].concat()
    }

    pub fn open(&self, sealed: &[u8], bound_to: &str) -> Result<String, String> {
        if sealed.len() <= NONCE_LEN {
            return Err("sealed token is truncated".into());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at the nonce length");
        let plaintext = self
            .cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: bound_to.as_bytes() })
            .map_err(|_| "sealed token does not open with ACTIOND_ENCRYPTION_KEY".to_owned())?;
        String::from_utf8(plaintext).map_err(|_| "sealed token is not text".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_the_sender() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let sealed = sealer.seal("EAAG-secret-token", "650175178190170");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(sealer.open(&sealed, "650175178190170").unwrap(), "EAAG-secret-token");
        assert!(sealer.open(&sealed, "999").is_err());
        let other = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        assert!(other.open(&sealed, "650175178190170").is_err());
    }

    #[test]
    fn keys_must_be_base64_of_32_bytes() {
        assert!(Sealer::from_base64("not base64!").is_err());
        assert!(Sealer::from_base64(&STANDARD.encode([0u8; 16])).is_err());
    }
}
