//! Request rules: the per-hook IP allowlist (checked before a body is read)
//! and rate limits (after verification: verified and unverified requests
//! have separate buckets), which client address a request counts as coming
//! from (trusted proxies, each with its one header), and the global
//! in-flight cap with eviction of the slowest body reader.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::{ForwardHeader, HookConfig, TrustedProxy};

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

/// The peers whose forwarding header is believed, each with the one
/// header it sets (`server.trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    nets: Vec<(IpNet, ForwardHeader)>,
    /// Requests that came in over a Unix socket (a local proxy).
    unix: Option<ForwardHeader>,
}

impl Proxies {
    /// Parse `server.trusted_proxies`; the error names the bad entry. The
    /// first entry that contains a peer decides its header.
    pub fn parse(list: &[TrustedProxy]) -> Result<Proxies, RuleError> {
        let mut p = Proxies::default();
        for (i, t) in list.iter().enumerate() {
            if t.from == "unix" {
                p.unix.get_or_insert(t.header);
            } else {
                let net = parse_net(&t.from)
                    .map_err(|m| RuleError::new(format!("server.trusted_proxies[{i}].from"), m))?;
                p.nets.push((net, t.header));
            }
        }
        Ok(p)
    }

    fn header_for_ip(&self, ip: IpAddr) -> Option<ForwardHeader> {
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .find(|(n, _)| n.contains(&ip))
            .map(|(_, h)| *h)
    }

    /// The header the connection's peer may tell us the client in, if any.
    pub fn header_for(&self, peer: Option<SocketAddr>) -> Option<ForwardHeader> {
        match peer {
            Some(p) => self.header_for_ip(p.ip()),
            None => self.unix,
        }
    }

    /// Whether the connection's peer may tell us who the client is.
    pub fn trusts(&self, peer: Option<SocketAddr>) -> bool {
        self.header_for(peer).is_some()
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
/// the peer is a trusted proxy: then the one header that proxy is
/// configured with, and no other (a proxy that does not set
/// `CF-Connecting-IP` passes on whatever the client wrote there).
/// `CF-Connecting-IP` and `X-Real-IP` hold one address. For
/// `X-Forwarded-For`, the right-most entry that is not itself a trusted
/// `X-Forwarded-For` proxy; entries further left were written by the
/// client and are never believed. A header that is missing or cannot be
/// parsed leaves the last trusted hop as the answer, so a garbled chain
/// fails closed against an allowlist. `None` for a Unix-socket peer
/// without a usable header.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    proxies: &Proxies,
) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| p.ip().to_canonical());
    let Some(header) = proxies.header_for(peer) else {
        return peer_ip;
    };
    if header != ForwardHeader::XForwardedFor {
        let mut values = headers.get_all(header.name()).iter();
        return match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse_forwarded_ip).or(peer_ip),
            _ => peer_ip,
        };
    }
    let mut entries: Vec<&str> = Vec::new();
    for v in headers.get_all(header.name()) {
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
        if proxies.header_for_ip(ip) != Some(ForwardHeader::XForwardedFor) {
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
            // try_: a rate of 1e-300/s must not panic on the conversion.
            Err(Duration::try_from_secs_f64((1.0 - tokens) / self.rate).unwrap_or(Duration::MAX))
        }
    }
}

/// The per-hook rules: the allowlist (checked before the body is read) and
/// two token buckets, one for verified deliveries and one for requests that
/// fail verification, so unauthenticated traffic never takes a genuine
/// sender's tokens.
#[derive(Debug, Default)]
pub struct HookRules {
    pub allow: Option<Vec<IpNet>>,
    pub bucket: Option<TokenBucket>,
    pub unverified: Option<TokenBucket>,
}

/// Why a request was stopped by the rules.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// Not on the allowlist (the address it counted as, if any).
    Forbidden(Option<IpAddr>),
}

/// The unverified bucket when a hook sets none: 60/min, burst 30.
const DEFAULT_UNVERIFIED_RATE: f64 = 1.0;
const DEFAULT_UNVERIFIED_BURST: u32 = 30;

/// A bucket from `rate_limit`-style keys; the error names the key.
fn bucket(
    rate: &Option<String>,
    burst: Option<u32>,
    rate_key: &str,
    burst_key: &str,
) -> Result<Option<TokenBucket>, RuleError> {
    match rate {
        None if burst.is_some() => Err(RuleError::new(burst_key, format!("needs {rate_key}"))),
        None => Ok(None),
        Some(r) => {
            let rate = parse_rate(r).map_err(|m| RuleError::new(rate_key, m))?;
            if burst == Some(0) {
                return Err(RuleError::new(burst_key, "must be at least 1"));
            }
            let burst = burst.unwrap_or_else(|| rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
            Ok(Some(TokenBucket::new(rate, burst)))
        }
    }
}

/// Take a token, or say in how many seconds (for Retry-After) to try again.
fn take(b: &TokenBucket, now: Instant) -> Result<(), u32> {
    b.take(now).map_err(|d| {
        let secs = d.as_secs_f64().ceil();
        if secs.is_finite() {
            secs.clamp(1.0, f64::from(u32::MAX)) as u32
        } else {
            u32::MAX
        }
    })
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
        let b = bucket(&h.rate_limit, h.rate_burst, "rate_limit", "rate_burst")?;
        let unverified = bucket(
            &h.unverified_rate_limit,
            h.unverified_rate_burst,
            "unverified_rate_limit",
            "unverified_rate_burst",
        )?
        .unwrap_or_else(|| TokenBucket::new(DEFAULT_UNVERIFIED_RATE, DEFAULT_UNVERIFIED_BURST));
        Ok(HookRules {
            allow,
            bucket: b,
            unverified: Some(unverified),
        })
    }

    /// The allowlist, before anything is read.
    pub fn check_allowed(&self, client: Option<IpAddr>) -> Result<(), Refusal> {
        if let Some(allow) = &self.allow {
            let ok = client.is_some_and(|ip| allow.iter().any(|n| n.contains(&ip)));
            if !ok {
                return Err(Refusal::Forbidden(client));
            }
        }
        Ok(())
    }

    /// A verified delivery takes a token from `rate_limit`; the error is
    /// the Retry-After in seconds.
    pub fn take_verified(&self, now: Instant) -> Result<(), u32> {
        self.bucket.as_ref().map_or(Ok(()), |b| take(b, now))
    }

    /// A request that failed verification takes one from its own bucket.
    pub fn take_unverified(&self, now: Instant) -> Result<(), u32> {
        self.unverified.as_ref().map_or(Ok(()), |b| take(b, now))
    }
}

/// Hook requests being handled, against `server.max_in_flight`. A slot is
/// taken when the head has arrived and held until the answer. When every
/// slot is taken, the slowest request still reading its body (for at least
/// [`EVICTABLE_AFTER`]) is evicted (answered 408) and its slot goes to the
/// newcomer: clients that send headers and then dribble their bodies cannot
/// hold every slot, while a genuine sender's body, which arrives with its
/// head, is never the slowest.
#[derive(Debug, Default)]
pub struct Slots {
    table: Mutex<SlotTable>,
    freed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct SlotTable {
    next: u64,
    entries: std::collections::HashMap<u64, SlotEntry>,
}

#[derive(Debug)]
struct SlotEntry {
    started: Instant,
    received: Arc<AtomicU64>,
    reading: Arc<AtomicBool>,
    evict: Arc<tokio::sync::Notify>,
}

/// A reader must have been reading this long before it may be evicted.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(250);

/// How long a newcomer waits for an evicted reader to give its slot up.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// One taken slot; given back when dropped.
pub struct SlotGuard<'a> {
    slots: &'a Slots,
    id: u64,
    /// Body bytes received so far.
    pub received: Arc<AtomicU64>,
    /// Still reading the body (only then evictable).
    pub reading: Arc<AtomicBool>,
    /// Notified when the slot is given to another request.
    pub evict: Arc<tokio::sync::Notify>,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.slots.table.lock() {
            t.entries.remove(&self.id);
        }
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        match self.table.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Take a slot unless `max` are taken.
    pub fn try_enter(&self, max: usize) -> Option<SlotGuard<'_>> {
        let mut t = self.lock();
        if t.entries.len() >= max {
            return None;
        }
        let id = t.next;
        t.next = t.next.wrapping_add(1);
        let e = SlotEntry {
            started: Instant::now(),
            received: Arc::new(AtomicU64::new(0)),
            reading: Arc::new(AtomicBool::new(true)),
            evict: Arc::new(tokio::sync::Notify::new()),
        };
        let g = SlotGuard {
            slots: self,
            id,
            received: e.received.clone(),
            reading: e.reading.clone(),
            evict: e.evict.clone(),
        };
        t.entries.insert(id, e);
        Some(g)
    }

    /// Take a slot; when all are taken, evict the slowest body reader and
    /// take its slot. `None` when no reader can be evicted (every slot is
    /// past reading: the daemon is really busy).
    pub async fn enter(&self, max: usize) -> Option<SlotGuard<'_>> {
        if let Some(g) = self.try_enter(max) {
            return Some(g);
        }
        let victim = {
            let t = self.lock();
            let now = Instant::now();
            t.entries
                .values()
                .filter(|e| {
                    e.reading.load(Ordering::Acquire)
                        && now.saturating_duration_since(e.started) >= EVICTABLE_AFTER
                })
                .min_by(|a, b| {
                    let rate = |e: &SlotEntry| {
                        e.received.load(Ordering::Relaxed) as f64
                            / now
                                .saturating_duration_since(e.started)
                                .as_secs_f64()
                                .max(1e-3)
                    };
                    rate(a).total_cmp(&rate(b))
                })
                .map(|e| {
                    // Chosen once: it is no longer a candidate.
                    e.reading.store(false, Ordering::Release);
                    e.evict.clone()
                })
        }?;
        victim.notify_one();
        let deadline = tokio::time::Instant::now() + EVICTION_WAIT;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(g) = self.try_enter(max) {
                return Some(g);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_enter(max);
            }
        }
    }

    pub fn current(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn proxies(l: &[(&str, ForwardHeader)]) -> Proxies {
        Proxies::parse(
            &l.iter()
                .map(|(f, h)| TrustedProxy {
                    from: f.to_string(),
                    header: *h,
                })
                .collect::<Vec<_>>(),
        )
        .unwrap()
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
            Proxies::parse(&[
                TrustedProxy {
                    from: "unix".into(),
                    header: ForwardHeader::XRealIp
                },
                TrustedProxy {
                    from: "x".into(),
                    header: ForwardHeader::XRealIp
                }
            ])
            .unwrap_err()
            .key,
            "server.trusted_proxies[1].from"
        );
    }

    #[test]
    fn forwarded_headers_only_from_trusted_peers() {
        use ForwardHeader::*;
        let p = proxies(&[("127.0.0.1", XForwardedFor), ("10.0.0.0/8", XForwardedFor)]);
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
        // CF-Connecting-IP is not believed from an X-Forwarded-For proxy.
        h.insert("cf-connecting-ip", HeaderValue::from_static("2001:db8::7"));
        assert_eq!(client_ip(peer("127.0.0.1:5"), &h, &p), ip("198.51.100.4"));
        // ...only from a proxy configured with it, and then X-Forwarded-For is not.
        let cf = proxies(&[("127.0.0.1", CfConnectingIp)]);
        assert_eq!(client_ip(peer("127.0.0.1:5"), &h, &cf), ip("2001:db8::7"));
        let mut only_xff = h.clone();
        only_xff.remove("cf-connecting-ip");
        assert_eq!(
            client_ip(peer("127.0.0.1:5"), &only_xff, &cf),
            ip("127.0.0.1"),
            "no CF-Connecting-IP: the proxy itself"
        );
        // Two copies of a single-address header: fail closed.
        let mut two = HeaderMap::new();
        two.append("cf-connecting-ip", HeaderValue::from_static("192.0.2.1"));
        two.append("cf-connecting-ip", HeaderValue::from_static("192.0.2.2"));
        assert_eq!(client_ip(peer("127.0.0.1:5"), &two, &cf), ip("127.0.0.1"));
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
        assert_eq!(
            client_ip(None, &h, &proxies(&[("unix", CfConnectingIp)])),
            ip("2001:db8::7")
        );
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

    #[tokio::test]
    async fn slots_cap_and_evict_the_slowest_reader() {
        let s = Slots::default();
        let a = s.try_enter(2).unwrap();
        let b = s.try_enter(2).unwrap();
        assert!(s.try_enter(2).is_none());
        // Nobody has been reading long enough: no eviction.
        assert!(s.enter(2).await.is_none());
        a.received.store(10_000, Ordering::Relaxed);
        tokio::time::sleep(EVICTABLE_AFTER + Duration::from_millis(20)).await;
        // b (0 bytes) is slower than a: b is told to go.
        let (ev_a, ev_b) = (a.evict.clone(), b.evict.clone());
        let waiter = async {
            ev_b.notified().await;
            drop(b);
        };
        let (c, ()) = tokio::join!(s.enter(2), waiter);
        assert!(c.is_some());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), ev_a.notified())
                .await
                .is_err()
        );
        // A slot past reading is never evicted.
        a.reading.store(false, Ordering::Release);
        c.as_ref().unwrap().reading.store(false, Ordering::Release);
        assert!(s.enter(2).await.is_none());
        drop(a);
        assert_eq!(s.current(), 1);
    }
}
