//! Events just stored, kept in memory for their first deliveries.
//!
//! With a forward action every event is read back right after it was
//! written: the dispatcher claims it within milliseconds and needed its
//! headers and body. On the embedded store that read cost more than the
//! claim itself (a reading connection's page cache is reset whenever the
//! file changed, so each body meant index seeks and `pread`s of pages the
//! writer had just written). Ingest still has them in memory, so the sink
//! keeps them here once they are on disk, and a claim takes them from here;
//! what is not here (evicted, a retry, an event stored by another process)
//! is read from the database as before.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use super::{Claimed, NewEvent, Outcome};

/// How much the kept events may take (bodies and headers): about 4,000
/// events of 8 KB, a backlog of several tenths of a second at the ingest
/// limit.
pub const KEEP_BYTES: usize = 32 * 1024 * 1024;

/// Most ids in the eviction queue: ids of events already taken leave it
/// when they reach its front, and this bounds what an event that is never
/// taken (its action paused, say) can hold up behind it.
const MAX_IDS: usize = 16 * 1024;

/// What an entry is counted as besides its body and headers.
const OVERHEAD: usize = 256;

pub struct Recent {
    cap: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The event and how many of its deliveries have not taken it yet.
    events: HashMap<String, (Claimed, usize)>,
    /// Ids in the order kept, for eviction (an id already taken by all its
    /// deliveries is skipped).
    order: VecDeque<String>,
    bytes: usize,
}

/// The event as a claim returns it, before the attempt and action are set.
fn template(e: &NewEvent) -> Claimed {
    Claimed {
        id: e.id.clone(),
        hook_id: e.hook_id.clone(),
        delivery_id: e.delivery_id.clone(),
        event_type: e.event_type.clone(),
        received_at: e.received_at,
        headers: e.headers.clone(),
        body: e.body.clone(),
        attempts: 0,
        action_id: String::new(),
    }
}

fn cost(ev: &Claimed) -> usize {
    ev.body
        .len()
        .saturating_add(ev.headers.byte_len())
        .saturating_add(OVERHEAD)
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        Recent {
            cap,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change below leaves the maps consistent before it can
        // panic, so a poisoned lock still guards a usable cache.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep the events of a batch that were newly stored with deliveries
    /// (called once the batch is durable).
    pub fn keep(&self, events: &[NewEvent], outcomes: &[Outcome]) {
        let mut g = self.lock();
        for (e, o) in events.iter().zip(outcomes) {
            let Outcome::Stored(id) = o else { continue };
            let deliveries = e.actions.as_ref().map_or(0, Vec::len);
            if deliveries == 0 || id != &e.id {
                continue;
            }
            let ev = template(e);
            let size = cost(&ev);
            if size > self.cap {
                continue;
            }
            g.bytes = g.bytes.saturating_add(size);
            if let Some((old, _)) = g.events.insert(e.id.clone(), (ev, deliveries)) {
                g.bytes = g.bytes.saturating_sub(cost(&old));
            } else {
                g.order.push_back(e.id.clone());
            }
        }
        while let Some(front) = g.order.front() {
            let taken = !g.events.contains_key(front);
            if !taken && g.bytes <= self.cap && g.order.len() <= MAX_IDS {
                break;
            }
            let Some(id) = g.order.pop_front() else { break };
            if let Some((ev, _)) = g.events.remove(&id) {
                g.bytes = g.bytes.saturating_sub(cost(&ev));
            }
        }
    }

    /// The event `id` for a delivery's attempt, if kept; an event leaves
    /// once each of its deliveries has taken it.
    pub fn take(&self, id: &str, attempts: i32, action_id: &str) -> Option<Claimed> {
        let mut g = self.lock();
        let (ev, left) = g.events.get_mut(id)?;
        let mut out = if *left > 1 {
            *left -= 1;
            ev.clone()
        } else {
            let (ev, _) = g.events.remove(id)?;
            g.bytes = g.bytes.saturating_sub(cost(&ev));
            ev
        };
        out.attempts = attempts;
        out.action_id = action_id.to_string();
        Some(out)
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let g = self.lock();
        (g.events.len(), g.bytes)
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventState, Headers};
    use bytes::Bytes;
    use std::time::SystemTime;

    fn event(id: &str, body: usize, actions: &[&str]) -> NewEvent {
        NewEvent {
            id: id.into(),
            hook_id: "gh".into(),
            delivery_id: format!("d-{id}"),
            event_type: "push".into(),
            received_at: SystemTime::UNIX_EPOCH,
            headers: Headers(vec![("x-a".into(), "1".into())]),
            body: Bytes::from(vec![b'x'; body]),
            state: EventState::Pending,
            actions: Some(actions.iter().map(|a| a.to_string()).collect()),
        }
    }

    #[test]
    fn each_delivery_takes_the_event_once_then_it_is_gone() {
        let r = Recent::new(1 << 20);
        let e = event("a", 100, &["one", "two"]);
        r.keep(std::slice::from_ref(&e), &[Outcome::Stored("a".into())]);
        let first = r.take("a", 1, "one").expect("kept");
        assert_eq!(
            (first.body.len(), first.attempts, first.action_id.as_str()),
            (100, 1, "one")
        );
        assert_eq!(first.delivery_id, "d-a");
        assert!(r.take("a", 1, "two").is_some());
        assert!(
            r.take("a", 2, "one").is_none(),
            "a retry reads the database"
        );
        assert_eq!(r.held(), (0, 0));
    }

    #[test]
    fn only_new_events_with_deliveries_are_kept() {
        let r = Recent::new(1 << 20);
        let events = [
            event("a", 10, &["x"]),
            event("b", 10, &["x"]),
            event("c", 10, &[]),
        ];
        r.keep(
            &events,
            &[
                Outcome::Duplicate("old".into()),
                Outcome::Stored("b".into()),
                Outcome::Stored("c".into()),
            ],
        );
        assert!(r.take("a", 1, "x").is_none());
        assert!(r.take("old", 1, "x").is_none());
        assert!(r.take("c", 1, "x").is_none());
        assert!(r.take("b", 1, "x").is_some());
    }

    #[test]
    fn the_oldest_go_first_when_full() {
        let each = cost(&template(&event("z", 1000, &["x"])));
        let r = Recent::new(each * 3);
        for id in ["a", "b", "c", "d"] {
            r.keep(&[event(id, 1000, &["x"])], &[Outcome::Stored(id.into())]);
        }
        assert_eq!(r.held(), (3, each * 3));
        assert!(r.take("a", 1, "x").is_none());
        for id in ["b", "c", "d"] {
            assert!(r.take(id, 1, "x").is_some(), "{id}");
        }
    }

    #[test]
    fn taken_events_do_not_pile_up_in_the_queue() {
        let r = Recent::new(1 << 20);
        // One event is never taken; everything after it is.
        r.keep(
            &[event("stuck", 10, &["x"])],
            &[Outcome::Stored("stuck".into())],
        );
        for i in 0..(MAX_IDS * 3) {
            let id = format!("e{i}");
            r.keep(&[event(&id, 10, &["x"])], &[Outcome::Stored(id.clone())]);
            assert!(r.take(&id, 1, "x").is_some());
        }
        assert!(r.queued() <= MAX_IDS + 1, "{} ids queued", r.queued());
        assert_eq!(r.held().0, 0, "the stuck event was evicted in the end");
    }
}
