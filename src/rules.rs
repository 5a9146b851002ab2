//! Request rules checked before a body is read: the per-hook IP allowlist
//! and rate limit, which client address a request counts as coming from
//! (trusted proxies), and the global in-flight cap.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::HookConfig;

/// A rule in the configuration that cannot be used: the key (relative to the
/// hook, or `server.trusted_proxies[N]`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct RuleError {
    pub key: String,
    pub message: String,
}

impl RuleError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> RuleError {
        RuleError {
            key: key.into(),
            message: message.into(),
        }
    }
}

pub use crate::config::parse_net;

/// The peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    nets: Vec<IpNet>,
    /// Trust requests that came in over a Unix socket (a local proxy).
    unix: bool,
}

impl Proxies {
    /// Parse `server.trusted_proxies`; the error names the bad entry.
    pub fn parse(list: &[String]) -> Result<Proxies, RuleError> {
        let mut p = Proxies::default();
        for (i, s) in list.iter().enumerate() {
            if s == "unix" {
                p.unix = true;
            } else {
                p.nets.push(
                    parse_net(s)
                        .map_err(|m| RuleError::new(format!("server.trusted_proxies[{i}]"), m))?,
                );
            }
        }
        Ok(p)
    }

    fn trusts_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether the connection's peer may tell us who the client is.
    pub fn trusts(&self, peer: Option<SocketAddr>) -> bool {
        match peer {
            Some(p) => self.trusts_ip(p.ip()),
            None => self.unix,
        }
    }
}

/// An address as written in a forwarding header: `1.2.3.4`, `2001:db8::1`,
/// `1.2.3.4:5678`, `[2001:db8::1]:80`, or `"[2001:db8::1]"` (RFC 7239 style).
fn parse_forwarded_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Some(sa.ip().to_canonical());
    }
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    std::net::Ipv6Addr::from_str(inner)
        .ok()
        .map(|a| IpAddr::V6(a).to_canonical())
}

/// Most `X-Forwarded-For` entries looked at (a longer chain is refused).
const MAX_FORWARDED_HOPS: usize = 32;

/// The address a request counts as coming from. The peer address, unless
/// the peer is a trusted proxy: then `CF-Connecting-IP` (set by Cloudflare's
/// edge, passed on by cloudflared), else the right-most `X-Forwarded-For`
/// entry that is not itself a trusted proxy. Entries further left were
/// written by the client and are never believed. A header that cannot be
/// parsed leaves the last trusted hop as the answer, so a garbled chain
/// fails closed against an allowlist. `None` for a Unix-socket peer without
/// a usable header.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    proxies: &Proxies,
) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| p.ip().to_canonical());
    if !proxies.trusts(peer) {
        return peer_ip;
    }
    let mut cf = headers.get_all("cf-connecting-ip").iter();
    if let (Some(v), None) = (cf.next(), cf.next()) {
        if let Some(ip) = v.to_str().ok().and_then(parse_forwarded_ip) {
            return Some(ip);
        }
    }
    let mut entries: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(v) = v.to_str() else {
            return peer_ip;
        };
        entries.extend(v.split(','));
        if entries.len() > MAX_FORWARDED_HOPS {
            return peer_ip;
        }
    }
    let mut current = peer_ip;
    for e in entries.iter().rev() {
        let Some(ip) = parse_forwarded_ip(e) else {
            return current;
        };
        if !proxies.trusts_ip(ip) {
            return Some(ip);
        }
        current = Some(ip);
    }
    current
}

/// Parse "10/s", "600/min", "1000/h" (also "/sec", "/second", "/m",
/// "/minute", "/hour") into requests per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let bad = || format!("expected a rate such as \"10/s\", \"600/min\" or \"1000/h\", got {s:?}");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let n: f64 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(bad());
    }
    Ok(n / per)
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Take a token, or say how long until one is available.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let (tokens, last) = *g;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let tokens = (tokens + elapsed * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *g = (tokens - 1.0, now);
            Ok(())
        } else {
            *g = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

/// The per-hook rules checked before a request body is read.
#[derive(Debug, Default)]
pub struct HookRules {
    pub allow: Option<Vec<IpNet>>,
    pub bucket: Option<TokenBucket>,
}

/// Why a request was stopped by the rules.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Not on the allowlist (the address it counted as, if any).
    Forbidden(Option<IpAddr>),
    /// Over the rate limit; retry after this many seconds.
    RateLimited(u32),
}

impl HookRules {
    /// Build from a `[[hooks]]` entry; the error names the key.
    pub fn from_config(h: &HookConfig) -> Result<HookRules, RuleError> {
        let allow = match &h.allow_ips {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(RuleError::new(
                    "allow_ips",
                    "an empty list would refuse every request; remove the key to allow all",
                ))
            }
            Some(list) => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, s)| {
                        parse_net(s).map_err(|m| RuleError::new(format!("allow_ips[{i}]"), m))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let bucket = match &h.rate_limit {
            None if h.rate_burst.is_some() => {
                return Err(RuleError::new("rate_burst", "needs rate_limit"))
            }
            None => None,
            Some(r) => {
                let rate = parse_rate(r).map_err(|m| RuleError::new("rate_limit", m))?;
                if h.rate_burst == Some(0) {
                    return Err(RuleError::new("rate_burst", "must be at least 1"));
                }
                let burst = h.rate_burst.unwrap_or_else(|| rate.ceil().max(1.0) as u32);
                Some(TokenBucket::new(rate, burst))
            }
        };
        Ok(HookRules { allow, bucket })
    }

    /// Check the allowlist, then take a token.
    pub fn check(&self, client: Option<IpAddr>, now: Instant) -> Result<(), Refusal> {
        if let Some(allow) = &self.allow {
            let ok = client.is_some_and(|ip| allow.iter().any(|n| n.contains(&ip)));
            if !ok {
                return Err(Refusal::Forbidden(client));
            }
        }
        if let Some(b) = &self.bucket {
            b.take(now)
                .map_err(|d| Refusal::RateLimited(d.as_secs_f64().ceil().max(1.0) as u32))?;
        }
        Ok(())
    }
}

/// Hook requests being handled, against `server.max_in_flight`.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// Count a request in, unless `max` are already in flight.
    pub fn try_enter(&self, max: usize) -> Option<InFlightGuard<'_>> {
        let prev = self.0.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.0.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightGuard(self))
    }

    pub fn current(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn proxies(l: &[&str]) -> Proxies {
        Proxies::parse(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn nets_parse() {
        assert!(parse_net("10.0.0.0/8")
            .unwrap()
            .contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(parse_net("10.1.2.3/8")
            .unwrap()
            .contains(&"10.9.9.9".parse::<IpAddr>().unwrap()));
        assert!(parse_net("2001:db8::/32")
            .unwrap()
            .contains(&"2001:db8:1::1".parse::<IpAddr>().unwrap()));
        assert_eq!(parse_net("192.0.2.7").unwrap().prefix_len(), 32);
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
        assert_eq!(
            Proxies::parse(&["unix".into(), "x".into()])
                .unwrap_err()
                .key,
            "server.trusted_proxies[1]"
        );
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.4, 10.0.0.2"),
        );
        // Untrusted peer: headers ignored.
        assert_eq!(client_ip(peer("192.0.2.1:5"), &h, &p), ip("192.0.2.1"));
        // Trusted: right-most untrusted entry; the left one is the client's claim.
        assert_eq!(client_ip(peer("127.0.0.1:5"), &h, &p), ip("198.51.100.4"));
        // IPv4-mapped peer counts as its IPv4 address.
        assert_eq!(
            client_ip(peer("[::ffff:127.0.0.1]:5"), &h, &p),
            ip("198.51.100.4")
        );
        // CF-Connecting-IP wins.
        h.insert("cf-connecting-ip", HeaderValue::from_static("2001:db8::7"));
        assert_eq!(client_ip(peer("127.0.0.1:5"), &h, &p), ip("2001:db8::7"));
        // Garbage fails closed to the last trusted hop.
        let mut g = HeaderMap::new();
        g.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, junk"),
        );
        assert_eq!(client_ip(peer("127.0.0.1:5"), &g, &p), ip("127.0.0.1"));
        // Several headers are one list, in order; ports are allowed.
        let mut m = HeaderMap::new();
        m.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1:4444"),
        );
        m.append(
            "x-forwarded-for",
            HeaderValue::from_static("[2001:db8::2]:80, 10.0.0.9"),
        );
        assert_eq!(client_ip(peer("127.0.0.1:5"), &m, &p), ip("2001:db8::2"));
        // Unix socket peer: trusted only when "unix" is listed.
        assert_eq!(client_ip(None, &h, &p), None);
        assert_eq!(client_ip(None, &h, &proxies(&["unix"])), ip("2001:db8::7"));
    }

    #[test]
    fn rates_and_buckets() {
        assert_eq!(parse_rate("10/s"), Ok(10.0));
        assert_eq!(parse_rate("120/min"), Ok(2.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("10/day").is_err());
        let b = TokenBucket::new(1.0, 2);
        let t = Instant::now();
        assert!(b.take(t).is_ok());
        assert!(b.take(t).is_ok());
        let wait = b.take(t).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        assert!(b.take(t + Duration::from_millis(1001)).is_ok());
    }

    #[test]
    fn in_flight_cap() {
        let f = InFlight::default();
        let a = f.try_enter(2).unwrap();
        let _b = f.try_enter(2).unwrap();
        assert!(f.try_enter(2).is_none());
        drop(a);
        assert!(f.try_enter(2).is_some());
        assert_eq!(f.current(), 1);
    }
}
