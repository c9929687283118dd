//! Where events may go. An endpoint's URL is `https://` and names no
//! loopback, unspecified, private, shared, link-local, multicast or
//! broadcast address: checked when it is registered or changed, and again
//! at every delivery by the resolver the dispatcher's client connects
//! through, so a name that later resolves inward (DNS rebinding) is refused
//! at the moment of connecting. `ACTIOND_EVENTS_ALLOW_LOCAL` lifts the rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub const URL_MAX: usize = 2048;
/// How long registration waits for DNS before leaving the check to delivery.
const REGISTRATION_LOOKUP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute URL actiond may post to at all.
    #[error("{0}")]
    InvalidUrl(String),
    /// A well-formed URL whose host is, or resolves to, a forbidden address.
    #[error("{0}")]
    Forbidden(String),
}

/// Whether events must not go to this address.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return forbidden_v4(v4);
            }
            let [first, second, ..] = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (first == 0x64 && second == 0xff9b) // the rest of 64:ff9b::/32, local-use NAT64
                || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
                || v6.is_multicast()
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_unspecified()
        || a == 0 // "this network", 0.0.0.0/8
        || ip.is_private()
        || (a == 100 && (b & 0xc0) == 64) // shared (carrier-grade NAT), 100.64.0.0/10
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240 // reserved, 240.0.0.0/4
}

/// The IPv4 address an IPv6 one stands for: mapped (`::ffff:a.b.c.d`),
/// translated (`::ffff:0:a.b.c.d`), compatible (`::a.b.c.d`), NAT64
/// (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let v4 = |high: u16, low: u16| Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8);
    match segments[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0, 0, 0, 0, 0xffff, 0] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(v4(segments[6], segments[7])),
        [0, 0, 0, 0, 0, 0] if !ip.is_loopback() && !ip.is_unspecified() => Some(v4(segments[6], segments[7])),
        [0x2002, ..] => Some(v4(segments[1], segments[2])),
        _ => None,
    }
}

/// The URL's form, read more strictly than a browser would: `https://` (or
/// `http://` when local targets are allowed) in any letter case, then a
/// host without credentials, and no space, control character or backslash
/// anywhere; space around it is trimmed.
pub fn parse(raw: &str, allow_local: bool) -> Result<Url, TargetError> {
    let invalid = |why: &str| Err(TargetError::InvalidUrl(why.to_owned()));
    if raw.chars().count() > URL_MAX {
        return invalid(&format!("must be at most {URL_MAX} characters"));
    }
    let text = raw.trim();
    let Some(rest) = strip_scheme(text, "https://").or_else(|| strip_scheme(text, "http://").filter(|_| allow_local)) else {
        return invalid("must be an https:// URL");
    };
    if text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\') {
        return invalid("must not hold spaces, control characters or backslashes");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return invalid("must name a host");
    }
    if authority.contains('@') {
        return invalid("must not carry a user name or password");
    }
    Url::parse(text).or_else(|e| invalid(&format!("is not a valid URL: {e}")))
}

/// What follows `scheme` (lower-case, with `://`) at the start of `text`, in any letter case.
fn strip_scheme<'a>(text: &'a str, scheme: &str) -> Option<&'a str> {
    text.get(..scheme.len()).filter(|head| head.eq_ignore_ascii_case(scheme)).map(|_| &text[scheme.len()..])
}

/// The host as an IP address, when it is written as one.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// The check of a URL at registration: its form, then its address, or the
/// addresses its name resolves to now. A name that does not resolve yet is
/// accepted: each delivery checks again where it resolves then.
pub async fn check(raw: &str, allow_local: bool) -> Result<Url, TargetError> {
    let url = parse(raw, allow_local)?;
    if allow_local {
        return Ok(url);
    }
    refuse_literal(&url)?;
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    if let Ok(Ok(addresses)) = tokio::time::timeout(REGISTRATION_LOOKUP, tokio::net::lookup_host((host.as_str(), port))).await {
        for address in addresses {
            if forbidden(address.ip()) {
                return Err(TargetError::Forbidden(format!("{host} resolves to {}, a forbidden address", address.ip())));
            }
        }
    }
    Ok(url)
}

/// Refuses a URL whose host is a forbidden IP address; names go through the resolver.
pub fn refuse_literal(url: &Url) -> Result<(), TargetError> {
    match literal_ip(url) {
        Some(ip) if forbidden(ip) => Err(TargetError::Forbidden(format!("{ip} is a forbidden address"))),
        _ => Ok(()),
    }
}

/// The dispatcher's resolver: a name is resolved by the system, and any
/// forbidden address among its answers refuses the connection.
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addresses.iter().find(|address| forbidden(address.ip())) {
                return Err(format!("{host} resolves to {}, a forbidden address", bad.ip()).into());
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inward_addresses_are_forbidden_and_public_ones_not() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "::ffff:0:7f00:1",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(forbidden(ip.parse().unwrap()), "{ip} should be forbidden");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:2800:220:1::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!forbidden(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn urls_must_be_https_with_a_host_and_no_credentials() {
        assert!(parse("https://hooks.example.com/actiond", false).is_ok());
        assert!(parse(" HTTPS://hooks.example.com:8443/a?b#c\n", false).is_ok());
        for bad in [
            "http://hooks.example.com",
            "ftp://x",
            "not a url",
            "https://user:pw@hooks.example.com",
            "https://@hooks.example.com",
            "/relative",
            "https:hooks.example.com",
            "https:///path",
            "https://a b",
            "https://a/\\b",
            "https://a/\u{85}b",
            "https://%zz/",
            "https://a:99999/",
        ] {
            assert!(matches!(parse(bad, false), Err(TargetError::InvalidUrl(_))), "{bad}");
        }
        assert!(parse("http://127.0.0.1:9000/hook", true).is_ok());
        assert!(matches!(parse(&format!("https://a.example/{}", "x".repeat(URL_MAX)), false), Err(TargetError::InvalidUrl(_))));
    }

    #[tokio::test]
    async fn registration_refuses_inward_literals_and_names() {
        for bad in
            ["https://127.0.0.1/hook", "https://[::1]/hook", "https://[::ffff:7f00:1]/", "https://10.0.0.8/", "https://localhost:8443/"]
        {
            assert!(matches!(check(bad, false).await, Err(TargetError::Forbidden(_))), "{bad}");
        }
        assert!(check("https://localhost:8443/", true).await.is_ok());
        assert!(check("https://93.184.216.34/hook", false).await.is_ok());
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_inward() {
        let refused = GuardedResolver.resolve("localhost".parse().unwrap()).await;
        assert!(refused.err().is_some_and(|e| e.to_string().contains("forbidden")));
    }
}
