//! Rules of the API document that no wire type carries by itself: the shape
//! of a worker's address and of a model name, written once as the pattern
//! the document shows and, where the scheduler checks it, as the check, so
//! the two say the same.

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// What a worker's `address` looks like: an `http` or `https` base URL whose
/// host is a dotted IPv4 address or a host name (its last label starting
/// with a letter), with an optional port and path. An IPv6 literal is not
/// one: give such a worker a host name. [`is_worker_address`]
/// checks exactly this.
pub const WORKER_ADDRESS_PATTERN: &str = concat!(
    r"^https?://",
    r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}",
    r"|([A-Za-z0-9_-]+\.)*[A-Za-z][A-Za-z0-9_-]*)",
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4}))?",
    r"(/[A-Za-z0-9._~/-]*)?$",
);

/// Whether `s` matches [`WORKER_ADDRESS_PATTERN`].
pub fn is_worker_address(s: &str) -> bool {
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
    else {
        return false;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._~/-".contains(&b))
    {
        return false;
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p.len() < 5 || (10_000..=65_535).contains(&p.parse::<u32>().unwrap_or(0)))
    });
    port_ok && (is_ipv4(host) || is_host_name(host))
}

/// Four decimal octets, without leading zeros.
fn is_ipv4(host: &str) -> bool {
    let octets: Vec<&str> = host.split('.').collect();
    octets.len() == 4
        && octets.iter().all(|o| {
            !o.is_empty()
                && o.len() <= 3
                && o.bytes().all(|b| b.is_ascii_digit())
                && (o.len() == 1 || !o.starts_with('0'))
                && o.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// Labels of letters, digits, `-` and `_`, the last starting with a letter (a
/// last label of digits would make it an IPv4 address to a URL parser).
fn is_host_name(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    labels.iter().all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }) && labels
        .last()
        .and_then(|l| l.bytes().next())
        .is_some_and(|b| b.is_ascii_alphabetic())
}

/// A worker's address in the document: [`WORKER_ADDRESS_PATTERN`].
pub struct WorkerAddress;

impl utoipa::PartialSchema for WorkerAddress {
    fn schema() -> RefOr<Schema> {
        string(WORKER_ADDRESS_PATTERN, "http://10.0.0.5:9000")
    }
}

impl ToSchema for WorkerAddress {}

/// What a `status` filter of a job list looks like: one or more job states,
/// separated by commas, each with spaces around it or not (`QUEUED,RUNNING`).
pub const STATUS_FILTER_PATTERN: &str = concat!(
    r"^ *(CREATED|QUEUED|RUNNING|COMPLETED|FAILED|CANCELLED) *",
    r"(, *(CREATED|QUEUED|RUNNING|COMPLETED|FAILED|CANCELLED) *)*$"
);

/// A `status` filter in the document: [`STATUS_FILTER_PATTERN`].
pub struct StatusFilter;

impl utoipa::PartialSchema for StatusFilter {
    fn schema() -> RefOr<Schema> {
        string(STATUS_FILTER_PATTERN, "QUEUED,RUNNING")
    }
}

impl ToSchema for StatusFilter {}

fn string(pattern: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .examples([example])
        .into()
}

/// A model name in the document: a plain name that does not start with a dot
/// (`tessera_core::catalog::is_model_name`).
#[derive(ToSchema)]
#[schema(value_type = String, pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$", example = "sdxl-base")]
pub struct ModelName(#[allow(dead_code)] String);

/// The bytes of an uploaded file, at least one.
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .min_length(Some(1))
            .into()
    }
}

impl ToSchema for Binary {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_addresses() {
        for ok in [
            "http://127.0.0.1:9000",
            "https://worker-gpu-0.farm.example:443/",
            "http://w/api/v1",
            "http://0.0.0.0:0",
            "http://a.1.b:65535",
            "http://project_worker_1:9000",
        ] {
            assert!(is_worker_address(ok), "{ok}");
            let url = url::Url::parse(ok).expect(ok);
            assert!(url.host().is_some());
        }
        for bad in [
            "",
            "ftp://w",
            "http://",
            "http://1.2.3.4.5",
            "http://08",
            "http://256.1.1.1",
            "http://01.1.1.1",
            "http://w:65536",
            "http://w:00080",
            "http://w:",
            "http://a..b",
            "http://w/?q",
            "http://[::1]:9000",
            "http://w\n",
        ] {
            assert!(!is_worker_address(bad), "{bad:?}");
        }
    }
}
