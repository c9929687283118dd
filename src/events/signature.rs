//! Signatures as the Standard Webhooks specification defines them, so a
//! receiver using its `standardwebhooks` library in any language verifies
//! them: `v1,` + base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`, keyed with
//! the base64-decoded part of a `whsec_` secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";
const SECRET_BYTES: usize = 32;

/// A new secret, `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut key);
    format!("{PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header: one `v1,…` per secret, space-separated.
pub fn signature_header(secrets: &[&str], id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let signatures: Result<Vec<String>, String> = secrets.iter().map(|secret| sign(secret, id, timestamp, body)).collect();
    Ok(signatures?.join(" "))
}

fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String, String> {
    let key =
        STANDARD.decode(secret.strip_prefix(PREFIX).unwrap_or(secret)).map_err(|_| "a stored event secret is not base64".to_owned())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries.
    #[test]
    fn signs_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        let header = signature_header(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures_and_fresh_secrets_differ() {
        let (new, old) = (generate_secret(), generate_secret());
        assert_ne!(new, old);
        assert!(new.starts_with("whsec_") && STANDARD.decode(&new[6..]).unwrap().len() == 32);
        let header = signature_header(&[&new, &old], "evt", 1, "{}").unwrap();
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [signature_header(&[&new], "evt", 1, "{}").unwrap(), signature_header(&[&old], "evt", 1, "{}").unwrap()]);
        assert!(signature_header(&["whsec_not base64!"], "evt", 1, "{}").is_err());
    }
}
