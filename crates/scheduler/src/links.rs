//! Download links: signed, expiring addresses of one artifact, for outputs a
//! chat platform will not take (over its upload limit).
//!
//! The scheduler is the only part that decides, so it alone signs and
//! verifies; the website only passes a link's token back and streams what the
//! scheduler answers, and a bot only asks for a link and prefixes the
//! website's address. A token is `<artifact id>.<expiry, Unix ms>.<HMAC>`
//! where the HMAC-SHA256 (hex) covers the first two parts under the key of
//! `artifacts.link_secret`: nothing is stored, any replica with the same key
//! verifies it, and changing the key revokes every link. The signature is
//! compared in constant time and checked before the expiry, so a forged link
//! is "invalid" whatever date it claims.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use tessera_core::ArtifactId;

type HmacSha256 = Hmac<Sha256>;

/// Longest token [`LinkSigner::verify`] looks at: an artifact id (30), an
/// expiry (at most 20 digits), a signature (64) and two dots.
const MAX_TOKEN_LEN: usize = 128;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// Not a token this key signed (forged, altered, cut short).
    Invalid,
    /// Signed, but past its expiry.
    Expired,
}

/// Signs and verifies download links with one key.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
    lifetime_secs: u64,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// A signer with `key`, or a random key when there is none (links then
    /// work only on this process, until it stops).
    pub fn new(key: Option<&str>, lifetime_secs: u64) -> Self {
        let key = match key {
            Some(k) => k.as_bytes().to_vec(),
            None => {
                use rand::RngCore;
                let mut k = vec![0u8; 32];
                rand::rng().fill_bytes(&mut k);
                k
            }
        };
        Self { key, lifetime_secs }
    }

    /// The key, for keys derived from it for other purposes (Telegram
    /// invoice payloads); never used as it is outside this module.
    pub(crate) fn base_key(&self) -> &[u8] {
        &self.key
    }

    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token for `artifact` that works from `now_ms` for the lifetime;
    /// answers it and its expiry (Unix milliseconds).
    pub fn sign(&self, artifact: &ArtifactId, now_ms: u64) -> (String, u64) {
        let expires = now_ms.saturating_add(self.lifetime_secs.saturating_mul(1000));
        let payload = format!("{artifact}.{expires}");
        let signature = hex::encode(self.mac(&payload).finalize().into_bytes());
        (format!("{payload}.{signature}"), expires)
    }

    /// The artifact a token names, if this key signed it and it has not
    /// expired at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<ArtifactId, LinkError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(LinkError::Invalid);
        }
        let (payload, signature) = token.rsplit_once('.').ok_or(LinkError::Invalid)?;
        let claimed = hex::decode(signature).map_err(|_| LinkError::Invalid)?;
        let expected = self.mac(payload).finalize().into_bytes();
        if claimed.len() != expected.len() || !bool::from(claimed.ct_eq(&expected)) {
            return Err(LinkError::Invalid);
        }
        let (artifact, expires) = payload.split_once('.').ok_or(LinkError::Invalid)?;
        let artifact: ArtifactId = artifact.parse().map_err(|_| LinkError::Invalid)?;
        let expires: u64 = expires.parse().map_err(|_| LinkError::Invalid)?;
        if now_ms >= expires {
            return Err(LinkError::Expired);
        }
        Ok(artifact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_verifies_until_it_expires_and_not_when_touched() {
        let signer = LinkSigner::new(Some("a key of at least thirty-two characters"), 60);
        let artifact = ArtifactId::generate();
        let (token, expires) = signer.sign(&artifact, 1_000);
        assert_eq!(expires, 61_000);
        assert_eq!(signer.verify(&token, 1_000), Ok(artifact.clone()));
        assert_eq!(signer.verify(&token, 60_999), Ok(artifact.clone()));
        assert_eq!(signer.verify(&token, 61_000), Err(LinkError::Expired));
        // Another expiry with the old signature: forged, whatever it claims.
        let (id, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let longer = format!("{id}.99999999999.{sig}");
        assert_eq!(signer.verify(&longer, 1_000), Err(LinkError::Invalid));
        // Another artifact, a flipped signature digit, a cut token, nonsense.
        let other = format!("{}.{rest}", ArtifactId::generate());
        assert_eq!(signer.verify(&other, 1_000), Err(LinkError::Invalid));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(signer.verify(&flipped, 1_000), Err(LinkError::Invalid));
        assert_eq!(
            signer.verify(&token[..token.len() - 2], 1_000),
            Err(LinkError::Invalid)
        );
        for junk in ["", ".", "..", "art_x.1.zz", &"a".repeat(500)] {
            assert_eq!(
                signer.verify(junk, 1_000),
                Err(LinkError::Invalid),
                "{junk}"
            );
        }
        // Another key does not accept it.
        let stranger = LinkSigner::new(Some("another key of at least thirty-two chars"), 60);
        assert_eq!(stranger.verify(&token, 1_000), Err(LinkError::Invalid));
        // Without a key, a random one: its links verify with itself only.
        let random = LinkSigner::new(None, 60);
        let (t, _) = random.sign(&artifact, 1_000);
        assert_eq!(random.verify(&t, 1_000), Ok(artifact));
        assert_eq!(signer.verify(&t, 1_000), Err(LinkError::Invalid));
    }
}
