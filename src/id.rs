//! Event identifiers: time-ordered, random, URL-safe (ULID layout).
//!
//! We mint our own ids instead of using a database sequence so an id is stable
//! no matter which store holds the event, and sorts by arrival.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The last id minted by this process, so ids made in the same millisecond
/// still sort in the order they were made (monotonic ULIDs).
static LAST: Mutex<u128> = Mutex::new(0);

/// A new 26-character ULID string: 48 bits of milliseconds, 80 random bits
/// (within one millisecond: the previous id plus one).
pub fn new_event_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut rnd = [0u8; 10];
    fill_random(&mut rnd);
    let mut value: u128 = (ms as u128 & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in rnd.iter().enumerate() {
        value |= (*b as u128) << (72 - 8 * i);
    }
    if let Ok(mut last) = LAST.lock() {
        if value >> 80 == *last >> 80 && value <= *last {
            value = *last + 1;
        }
        *last = value;
    }
    let mut out = [0u8; 26];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 125 - 5 * i as u32;
        *slot = CROCKFORD[((value >> shift) & 0x1F) as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The smallest event id minted at `t`: ids compare as strings in the order
/// of their time, so "received before t" is `id < time_bound(t)`, served by
/// the primary key instead of an extra index on the receipt time.
pub fn time_bound(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let value: u128 = (ms as u128 & 0xFFFF_FFFF_FFFF) << 80;
    (0..26)
        .map(|i| CROCKFORD[((value >> (125 - 5 * i as u32)) & 0x1F) as usize] as char)
        .collect()
}

/// A random RFC 4122 version-4 UUID, as GitHub uses for delivery ids.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Fill `buf` from the OS random source. getrandom only fails when the
/// kernel has no entropy interface at all; then we fall back to the clock so
/// ids stay unique enough rather than aborting a request.
pub fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_err() {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8 ^ (std::process::id() as u8);
        }
    }
}

/// Lower-case hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xF) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_distinct_and_well_formed() {
        let a = new_event_id();
        let b = new_event_id();
        assert_eq!(a.len(), 26);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| CROCKFORD.contains(&c)));
    }

    #[test]
    fn ids_are_monotonic_within_a_process() {
        let ids: Vec<String> = (0..1000).map(|_| new_event_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn time_bounds_order_ids() {
        let before = time_bound(SystemTime::now() - std::time::Duration::from_millis(5));
        let id = new_event_id();
        let after = time_bound(SystemTime::now() + std::time::Duration::from_millis(5));
        assert!(before < id && id < after, "{before} {id} {after}");
        assert_eq!(time_bound(UNIX_EPOCH), "0".repeat(26));
    }

    #[test]
    fn uuid_has_version_4_layout() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
