//! Telegram Stars (`XTR`), for the Telegram bots: invoices and subscription
//! links the scheduler prices and signs, and the payments the bots relay.
//!
//! A bot only relays: the scheduler sets the price, signs the invoice's
//! `payload` (which Telegram hands back in the pre-checkout query and the
//! payment) and checks it again on every relay, so a forged payload, another
//! user's invoice, or a price the scheduler never asked for changes nothing.
//! A payload is `<plan>.<stars>.<expiry, Unix s>.<nonce>.<MAC>`, where the
//! MAC (HMAC-SHA256, the first 12 bytes in hex) covers those parts and the
//! user it was made for, under a key derived from `artifacts.link_secret`
//! for this purpose alone. The nonce names the grant: a subscription's
//! renewals carry the payload of its first payment, so they extend the same
//! grant.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use tessera_core::UserRef;

/// The only subscription period the Bot API takes: 30 days, in seconds.
pub const SUBSCRIPTION_PERIOD_SECS: u32 = 2_592_000;
/// The most a subscription may cost, in Stars (the Bot API's limit).
pub const MAX_SUBSCRIPTION_STARS: u32 = 10_000;
/// The longest `payload` the Bot API takes, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 128;
/// Bytes of the MAC kept in a payload.
const MAC_BYTES: usize = 12;
/// The purpose the payload key is derived for.
const KEY_PURPOSE: &str = "tessera telegram stars invoice payload v1";

/// `[payments.telegram]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StarsConfig {
    /// Price of each plan in Stars, by plan id; a plan not named is not sold
    /// in Telegram, and an empty table sells nothing there.
    pub stars: BTreeMap<String, u32>,
    /// `true`: a subscription link Telegram renews every 30 days; `false`:
    /// one-off invoices, each paying for `period_secs`.
    pub subscription: bool,
    /// What a one-off invoice pays for, in seconds.
    pub period_secs: u64,
    /// How long an invoice may be paid after it was made, in seconds.
    pub invoice_lifetime_secs: u64,
    /// The invoice's title (at most 32 characters once filled in); `{plan}`
    /// becomes the plan's name.
    pub title: String,
    /// The invoice's description (at most 255 characters once filled in);
    /// `{plan}`, `{tokens}` (a day) and `{days}` are filled in.
    pub description: String,
}

impl Default for StarsConfig {
    fn default() -> Self {
        Self {
            stars: BTreeMap::new(),
            subscription: true,
            period_secs: u64::from(SUBSCRIPTION_PERIOD_SECS),
            invoice_lifetime_secs: 3600,
            title: "Tessera {plan}".into(),
            description: "The {plan} plan: {tokens} tokens a day for {days} days.".into(),
        }
    }
}

impl StarsConfig {
    /// Checks what the types cannot.
    pub fn check(&self) -> anyhow::Result<()> {
        for (plan, &stars) in &self.stars {
            if plan.parse::<tessera_core::PlanId>().is_err() {
                anyhow::bail!("payments.telegram.stars: {plan:?} is not a plan id");
            }
            if stars == 0 {
                anyhow::bail!("payments.telegram.stars.{plan}: a price must be at least 1 Star");
            }
            if self.subscription && stars > MAX_SUBSCRIPTION_STARS {
                anyhow::bail!(
                    "payments.telegram.stars.{plan}: a subscription costs at most {MAX_SUBSCRIPTION_STARS} Stars"
                );
            }
        }
        if self.period_secs == 0 || self.invoice_lifetime_secs == 0 {
            anyhow::bail!(
                "payments.telegram: period_secs and invoice_lifetime_secs must be positive"
            );
        }
        if self.title.trim().is_empty() || self.description.trim().is_empty() {
            anyhow::bail!("payments.telegram: title and description must not be empty");
        }
        Ok(())
    }

    /// The price of `plan` in Stars, if Telegram sells it.
    pub fn price(&self, plan: &str) -> Option<u32> {
        self.stars.get(plan).copied()
    }

    /// What one payment pays for, in seconds.
    pub fn period_secs(&self) -> u64 {
        if self.subscription {
            u64::from(SUBSCRIPTION_PERIOD_SECS)
        } else {
            self.period_secs
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// What a payload says, once its MAC verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoice {
    pub plan: String,
    pub stars: u32,
    /// Unix seconds after which it may no longer be paid.
    pub expires: i64,
    pub nonce: String,
}

impl Invoice {
    /// The grant this invoice's payments extend.
    pub fn reference(&self) -> String {
        format!("stars-{}", self.nonce)
    }
}

/// Signs and verifies invoice payloads.
#[derive(Clone)]
pub struct PayloadSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for PayloadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadSigner").finish_non_exhaustive()
    }
}

impl PayloadSigner {
    /// A signer whose key is derived from `base` (the download links' key)
    /// for invoice payloads alone: a download link cannot pass for a
    /// payload, nor the reverse.
    pub fn derived_from(base: &[u8]) -> Self {
        let mut mac = HmacSha256::new_from_slice(base).expect("HMAC takes keys of any length");
        mac.update(KEY_PURPOSE.as_bytes());
        Self {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, user: &UserRef, body: &str) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(user.to_string().as_bytes());
        mac.update(b"|");
        mac.update(body.as_bytes());
        mac.finalize().into_bytes()[..MAC_BYTES].to_vec()
    }

    /// The payload of an invoice for `user`.
    pub fn sign(&self, user: &UserRef, invoice: &Invoice) -> String {
        let body = format!(
            "{}.{}.{}.{}",
            invoice.plan, invoice.stars, invoice.expires, invoice.nonce
        );
        let mac = hex::encode(self.mac(user, &body));
        format!("{body}.{mac}")
    }

    /// What `payload` says, if this key signed it for `user` (whatever its
    /// expiry: the caller decides whether that matters).
    pub fn verify(&self, user: &UserRef, payload: &str) -> Option<Invoice> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return None;
        }
        let (body, mac) = payload.rsplit_once('.')?;
        let claimed = hex::decode(mac).ok()?;
        let expected = self.mac(user, body);
        if claimed.len() != expected.len() || !bool::from(claimed.ct_eq(&expected)) {
            return None;
        }
        let mut parts = body.split('.');
        let (plan, stars, expires, nonce) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(Invoice {
            plan: plan.to_owned(),
            stars: stars.parse().ok()?,
            expires: expires.parse().ok()?,
            nonce: nonce.to_owned(),
        })
    }
}

/// A fresh nonce: 12 characters of `[0-9a-z]`.
pub fn nonce() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice() -> Invoice {
        Invoice {
            plan: "starter".into(),
            stars: 250,
            expires: 1_900_000_000,
            nonce: nonce(),
        }
    }

    #[test]
    fn a_payload_verifies_for_its_user_only_and_not_when_touched() {
        let signer = PayloadSigner::derived_from(b"a key of at least thirty-two characters");
        let alice: UserRef = "telegram:1".parse().unwrap();
        let bob: UserRef = "telegram:2".parse().unwrap();
        let inv = invoice();
        let payload = signer.sign(&alice, &inv);
        assert_eq!(signer.verify(&alice, &payload), Some(inv.clone()));
        assert_eq!(signer.verify(&bob, &payload), None);
        let cheaper = payload.replacen(".250.", ".1.", 1);
        assert_eq!(signer.verify(&alice, &cheaper), None);
        let other = PayloadSigner::derived_from(b"another key of thirty-two characters");
        assert_eq!(other.verify(&alice, &payload), None);
        assert_eq!(signer.verify(&alice, "pro.1.2.3.00"), None);
        assert_eq!(signer.verify(&alice, ""), None);
    }

    #[test]
    fn the_longest_plan_id_fits_telegrams_payload_limit() {
        let signer = PayloadSigner::derived_from(b"k");
        let user: UserRef = "telegram:12345678901234".parse().unwrap();
        let inv = Invoice {
            plan: "p".repeat(64),
            stars: MAX_SUBSCRIPTION_STARS * 100,
            expires: i64::from(u32::MAX),
            nonce: nonce(),
        };
        let payload = signer.sign(&user, &inv);
        assert!(payload.len() <= MAX_PAYLOAD_BYTES, "{}", payload.len());
        assert_eq!(signer.verify(&user, &payload), Some(inv));
    }

    #[test]
    fn the_defaults_check_and_bad_prices_do_not() {
        StarsConfig::default().check().unwrap();
        let mut c = StarsConfig::default();
        c.stars.insert("starter".into(), 0);
        assert!(c.check().is_err());
        c.stars.insert("starter".into(), 20_000);
        assert!(c.check().is_err());
        c.subscription = false;
        c.check().unwrap();
        c.stars.insert("not a plan!".into(), 5);
        assert!(c.check().is_err());
    }
}
