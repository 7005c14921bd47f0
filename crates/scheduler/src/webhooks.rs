//! Job webhooks: a job created with a `callback_url` is POSTed there, signed,
//! when it ends (docs/webhooks.md).
//!
//! Three parts. **Where a webhook may go**: a callback URL is an absolute
//! `http`/`https` URL without credentials whose host resolves to public
//! addresses only; every address it resolves to is checked against the
//! private, loopback, link-local and other special ranges ([`is_public`]),
//! unless the operator allows a network (`webhooks.allow_networks`). The
//! check runs at create and again at each attempt (DNS can change), and the
//! attempt connects to the very addresses it checked (reqwest's `resolve`
//! override), so a name that resolves differently a moment later cannot
//! slip past. Redirects are not followed.
//!
//! **Signing**: `Tessera-Signature: v1=<hex HMAC-SHA256(secret,
//! "{timestamp}.{body}")>` with the creating key's webhook secret, beside
//! `Tessera-Webhook-Id` (the same on every attempt: receivers dedupe on it)
//! and `Tessera-Webhook-Timestamp` (unix seconds of this attempt).
//!
//! **Delivery**: the transaction that ends such a job writes its delivery
//! row (`store::webhooks`). The deliverer ([`spawn`]) claims due rows with a
//! conditional update, so with several replicas one sends each attempt; it
//! is woken when a job with a webhook ends here, and looks every
//! `webhooks.poll_ms` besides. A 2xx answer delivers; anything else is
//! retried with exponential back-off and jitter until `max_age_secs` after
//! the first attempt, then abandoned. A crash between the POST and its
//! record means the claim's lease runs out and the same webhook is sent
//! again.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use rand::Rng;
use sha2::Sha256;
use tokio::sync::watch;
use url::{Host, Url};

use tessera_api::public::{WebhookEvent, MAX_CALLBACK_URL_LEN};
use tessera_core::Millis;

use crate::config::WebhooksConfig;
use crate::http::AppState;
use crate::lifecycle::now_ms;
use crate::store::{AttemptOutcome, WebhookDelivery};

/// The header naming the delivery: the same on every attempt.
pub const ID_HEADER: &str = "Tessera-Webhook-Id";
/// The header with the attempt's time, unix seconds, as signed.
pub const TIMESTAMP_HEADER: &str = "Tessera-Webhook-Timestamp";
/// The header with the signature, `v1=<hex>`.
pub const SIGNATURE_HEADER: &str = "Tessera-Signature";
/// Prefix of a webhook signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// Deliveries claimed (and attempted side by side) at once.
const BATCH: u32 = 16;
/// How long a DNS lookup of a callback host may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A new webhook signing secret: `whsec_` and 32 random bytes as hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// The signature header's value for `body` sent at `timestamp` (unix
/// seconds): `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"` keyed
/// with the whole secret string.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why a callback URL is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallbackError {
    /// Not an absolute http(s) URL of the allowed length, or with credentials.
    Invalid(String),
    /// Its host is (or resolves to) an address not allowed, or does not resolve.
    NotAllowed(String),
}

impl std::fmt::Display for CallbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallbackError::Invalid(m) | CallbackError::NotAllowed(m) => f.write_str(m),
        }
    }
}

/// Which addresses a callback may reach: public ones, and the networks the
/// operator allows.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(config: &WebhooksConfig) -> anyhow::Result<Self> {
        Ok(Self {
            allowed: config.networks()?,
        })
    }

    /// Whether a callback may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip) || self.allowed.iter().any(|n| n.contains(&ip))
    }

    /// Checks a callback URL's shape (nothing is resolved).
    pub fn parse(url: &str) -> Result<Url, CallbackError> {
        let invalid = |m: &str| Err(CallbackError::Invalid(m.to_owned()));
        if url.len() > MAX_CALLBACK_URL_LEN {
            return Err(CallbackError::Invalid(format!(
                "callback_url must be at most {MAX_CALLBACK_URL_LEN} characters"
            )));
        }
        let Ok(parsed) = Url::parse(url) else {
            return invalid("callback_url must be an absolute http or https URL");
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return invalid("callback_url must be an http or https URL");
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return invalid("callback_url must not hold credentials (user:password@)");
        }
        if parsed.host().is_none() {
            return invalid("callback_url must name a host");
        }
        Ok(parsed)
    }

    /// Resolves a callback URL's host and checks every address it resolves
    /// to; answers them (with the URL's port) for the connection to use.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, CallbackError> {
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = match url.host() {
            Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            Some(Host::Domain(name)) => {
                let lookup = tokio::net::lookup_host((name, port));
                match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(found)) => found.collect(),
                    Ok(Err(_)) | Err(_) => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        let host = url.host_str().unwrap_or_default();
        if addrs.is_empty() {
            return Err(CallbackError::NotAllowed(format!(
                "callback_url's host {host} does not resolve"
            )));
        }
        if let Some(bad) = addrs.iter().find(|a| !self.allows(a.ip())) {
            return Err(CallbackError::NotAllowed(format!(
                "callback_url's host {host} is {}, a private, loopback, link-local or otherwise non-public address, which this scheduler does not call",
                bad.ip()
            )));
        }
        Ok(addrs)
    }

    /// [`Self::parse`] then [`Self::resolve`].
    pub async fn check(&self, url: &str) -> Result<(Url, Vec<SocketAddr>), CallbackError> {
        let parsed = Self::parse(url)?;
        let addrs = self.resolve(&parsed).await?;
        Ok((parsed, addrs))
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) as the IPv4 address
/// it is; others as they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether `ip` is a public unicast address: not private, loopback,
/// link-local, carrier-grade NAT, unspecified, multicast, broadcast,
/// documentation, benchmarking, reserved, or an IPv6 transition range that
/// can carry any of those.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    const NOT_PUBLIC: &[([u8; 4], u8)] = &[
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local (cloud metadata)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, broadcast
    ];
    !NOT_PUBLIC.iter().any(|&(net, p)| in_v4(ip, net, p))
}

fn in_v6(ip: Ipv6Addr, net: Ipv6Addr, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    (u128::from(ip) & mask) == (u128::from(net) & mask)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // Global unicast is 2000::/3; everything else (::, ::1, fc00::/7,
    // fe80::/10, ff00::/8, 64:ff9b::/96, ...) is not public.
    if !in_v6(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return false;
    }
    const NOT_PUBLIC: &[([u16; 8], u8)] = &[
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), // Teredo (carries an IPv4 address)
        ([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28), // ORCHID
        ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), // ORCHIDv2
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
        ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), // 6to4 (carries an IPv4 address)
    ];
    !NOT_PUBLIC
        .iter()
        .any(|&(net, p)| in_v6(ip, Ipv6Addr::from(net), p))
}

/// The wait after failed attempt number `attempt` (1 for the first):
/// `first_retry_ms` times 3 to the power `attempt - 1`, at most
/// `max_retry_ms`, then a fifth either way of jitter (`jitter` in -1..=1).
pub fn backoff_ms(config: &WebhooksConfig, attempt: i32, jitter: f64) -> i64 {
    let steps = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(40);
    let base = config
        .first_retry_ms
        .saturating_mul(3u64.saturating_pow(steps))
        .min(config.max_retry_ms) as f64;
    (base * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0)))
        .round()
        .max(1.0) as i64
}

/// What follows a failed attempt: another at its back-off, or, when that
/// would fall past `max_age_secs` after the first attempt, nothing.
pub fn after_failure(
    config: &WebhooksConfig,
    delivery: &WebhookDelivery,
    now: Millis,
    status: Option<u16>,
    error: String,
    jitter: f64,
) -> AttemptOutcome {
    let first = delivery.first_attempt_at.unwrap_or(now);
    let max_age_ms = i64::try_from(config.max_age_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let due_at = now.saturating_add(backoff_ms(config, delivery.attempts, jitter));
    if due_at > first.saturating_add(max_age_ms) {
        AttemptOutcome::Abandoned { status, error }
    } else {
        AttemptOutcome::Retry {
            due_at,
            status,
            error,
        }
    }
}

/// Delivers due webhooks until `stop` is set: woken when a job with a
/// webhook ends here, and every `webhooks.poll_ms` besides.
pub fn spawn(state: AppState, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let poll = Duration::from_millis(state.config.webhooks.poll_ms.max(1));
        loop {
            // Batch after batch while deliveries are due; a stop waits for
            // the attempts in flight (at most `timeout_ms`), no longer.
            while !*stop.borrow() {
                match deliver_due(&state).await {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not claim due webhooks; trying again soon");
                        break;
                    }
                }
            }
            tokio::select! {
                _ = state.lifecycle.webhooks_due() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    })
}

/// Claims one batch of due deliveries and attempts them side by side;
/// answers how many it claimed.
pub async fn deliver_due(state: &AppState) -> anyhow::Result<usize> {
    let config = &state.config.webhooks;
    let now = now_ms();
    // The lease: past the attempt's timeout, so a deliverer that died
    // mid-attempt leaves a delivery another one sends again.
    let lease = i64::try_from(config.timeout_ms.saturating_mul(2)).unwrap_or(i64::MAX);
    let claimed = state
        .store
        .claim_webhooks(now, now.saturating_add(lease).saturating_add(30_000), BATCH)
        .await?;
    let n = claimed.len();
    let attempts = claimed
        .into_iter()
        .map(|d| attempt(state, &state.webhook_policy, d));
    futures::future::join_all(attempts).await;
    Ok(n)
}

/// One attempt of one delivery, and its outcome recorded.
async fn attempt(state: &AppState, policy: &AddressPolicy, delivery: WebhookDelivery) {
    let config = &state.config.webhooks;
    let sent = send(state, policy, &delivery).await;
    let now = now_ms();
    let jitter = rand::rng().random_range(-1.0..=1.0);
    let outcome = match sent {
        Ok(status) if (200..300).contains(&status) => AttemptOutcome::Delivered { status },
        Ok(status) => after_failure(
            config,
            &delivery,
            now,
            Some(status),
            format!("the receiver answered {status}"),
            jitter,
        ),
        Err(Failure::Final(error)) => AttemptOutcome::Abandoned {
            status: None,
            error,
        },
        Err(Failure::Retry(error)) => after_failure(config, &delivery, now, None, error, jitter),
    };
    let label = match &outcome {
        AttemptOutcome::Delivered { .. } => "delivered",
        AttemptOutcome::Retry { .. } => "failed_attempt",
        AttemptOutcome::Abandoned { .. } => "abandoned",
    };
    match &outcome {
        AttemptOutcome::Delivered { status } => {
            tracing::info!(webhook_id = %delivery.id, job_id = %delivery.job_id, attempt = delivery.attempts, status, "webhook delivered")
        }
        AttemptOutcome::Retry { error, due_at, .. } => {
            tracing::info!(webhook_id = %delivery.id, job_id = %delivery.job_id, attempt = delivery.attempts, error = %error, retry_in_ms = due_at - now, "webhook attempt failed; retrying")
        }
        AttemptOutcome::Abandoned { error, .. } => {
            tracing::warn!(webhook_id = %delivery.id, job_id = %delivery.job_id, attempt = delivery.attempts, error = %error, "webhook abandoned")
        }
    }
    match state
        .store
        .record_webhook_attempt(&delivery.job_id, delivery.attempts, &outcome, now)
        .await
    {
        Ok(true) => state.lifecycle.metrics().webhook_attempt(label),
        // The lease ran out and another attempt was claimed: its outcome counts.
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(webhook_id = %delivery.id, error = %e, "could not record a webhook attempt; it will be sent again")
        }
    }
}

/// Why an attempt did not get an answer.
enum Failure {
    /// Worth another attempt (a refused address, a timeout, a closed connection).
    Retry(String),
    /// Never worth another (the job or its key's secret is gone).
    Final(String),
}

/// Sends one attempt; answers the receiver's status.
async fn send(
    state: &AppState,
    policy: &AddressPolicy,
    delivery: &WebhookDelivery,
) -> Result<u16, Failure> {
    let config = &state.config.webhooks;
    let store_error = |e: crate::store::StoreError| Failure::Retry(format!("database: {e}"));
    let Some(secret) = state
        .store
        .webhook_secret(&delivery.key_id)
        .await
        .map_err(store_error)?
    else {
        return Err(Failure::Final(
            "the creating key has no webhook secret".into(),
        ));
    };
    let Some(job) = state
        .store
        .get_job(&delivery.job_id, None)
        .await
        .map_err(store_error)?
    else {
        return Err(Failure::Final("the job is gone".into()));
    };
    let job = crate::http::jobs::view(state, job)
        .await
        .map_err(|e| Failure::Retry(format!("the job's view: {e:?}")))?;
    let event = WebhookEvent {
        webhook_id: delivery.id.clone(),
        event: delivery.event.clone(),
        created_at: crate::http::wire::rfc3339(delivery.created_at),
        job,
    };
    let body = serde_json::to_vec(&event).expect("events serialise");
    // Checked again now (DNS can change), and the connection made to the
    // addresses checked.
    let url = AddressPolicy::parse(&delivery.url).map_err(|e| Failure::Final(e.to_string()))?;
    let addrs = policy
        .resolve(&url)
        .await
        .map_err(|e| Failure::Retry(e.to_string()))?;
    let timeout = Duration::from_millis(config.timeout_ms);
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("Tessera-Webhooks/", env!("CARGO_PKG_VERSION")));
    if let Some(Host::Domain(name)) = url.host() {
        client = client.resolve_to_addrs(name, &addrs);
    }
    let client = client
        .build()
        .map_err(|e| Failure::Retry(format!("an HTTP client: {e}")))?;
    let timestamp = now_ms() / 1000;
    let answer = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ID_HEADER, delivery.id.as_str())
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, signature(&secret, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| {
            Failure::Retry(if e.is_timeout() {
                format!("no answer within {} ms", config.timeout_ms)
            } else {
                format!("the request failed: {e}")
            })
        })?;
    Ok(answer.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn special_addresses_are_not_public() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "127.8.8.8",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "2001:db8::1",
            "2001:0:a00:1::1",
        ] {
            assert!(!public(ip), "{ip} is not public");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn allowed_networks_are_allowed_and_nothing_else() {
        let config = WebhooksConfig {
            allow_networks: vec!["127.0.0.0/8".into()],
            ..Default::default()
        };
        let policy = AddressPolicy::new(&config).unwrap();
        assert!(policy.allows("127.0.0.1".parse().unwrap()));
        assert!(policy.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.allows("::1".parse().unwrap()));
        assert!(!policy.allows("10.0.0.1".parse().unwrap()));
        assert!(policy.allows("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn callback_urls_are_checked_for_shape() {
        let ok = AddressPolicy::parse("https://example.com/hook?x=1").unwrap();
        assert_eq!(ok.host_str(), Some("example.com"));
        for bad in [
            "ftp://example.com/",
            "example.com/hook",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(AddressPolicy::parse(bad), Err(CallbackError::Invalid(_))),
                "{bad}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_CALLBACK_URL_LEN));
        assert!(matches!(
            AddressPolicy::parse(&long),
            Err(CallbackError::Invalid(_))
        ));
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"a":1}"#),
            "v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        let secret = new_secret();
        assert!(secret.starts_with(SECRET_PREFIX));
        assert_eq!(secret.len(), SECRET_PREFIX.len() + 64);
    }

    #[test]
    fn back_off_grows_threefold_to_its_cap_and_gives_up_past_the_max_age() {
        let config = WebhooksConfig::default();
        let waits: Vec<i64> = (1..=8).map(|n| backoff_ms(&config, n, 0.0)).collect();
        assert_eq!(
            waits,
            [10_000, 30_000, 90_000, 270_000, 810_000, 2_430_000, 3_600_000, 3_600_000]
        );
        assert_eq!(backoff_ms(&config, 1, 1.0), 12_000);
        assert_eq!(backoff_ms(&config, 1, -1.0), 8_000);
        let delivery = |attempts, first| WebhookDelivery {
            id: tessera_core::WebhookId::generate(),
            job_id: tessera_core::JobId::generate(),
            event: "job.completed".into(),
            url: "https://example.com/".into(),
            key_id: "key_x".into(),
            state: crate::store::DeliveryState::Pending,
            attempts,
            due_at: 0,
            created_at: 0,
            first_attempt_at: Some(first),
            last_attempt_at: None,
            last_status: None,
            last_error: None,
            ended_at: None,
        };
        let day = 86_400_000;
        assert!(matches!(
            after_failure(&config, &delivery(1, 0), 0, Some(500), "x".into(), 0.0),
            AttemptOutcome::Retry { due_at: 10_000, .. }
        ));
        assert!(matches!(
            after_failure(&config, &delivery(30, 0), day - 1000, None, "x".into(), 0.0),
            AttemptOutcome::Abandoned { .. }
        ));
    }
}
