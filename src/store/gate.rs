//! First come, first served turns at the embedded store's one write
//! connection (see `WriteConn` in sqlite.rs).
//!
//! SQLite has one write lock per file, and a connection that finds it taken
//! polls in its busy handler (sleeps of 1 ms growing to 100 ms). Under
//! ingest load the group-commit writer committed back to back and took the
//! lock again within microseconds, so the delivery side's transactions
//! (fan-out, claims, results) almost never caught it: a hook's action
//! forwarded a few hundred events per second while thousands came in. Now
//! every write of the process waits its turn here, in arrival order (a
//! plain mutex lets the thread that just let go take it again first).
//! Other processes (the `events` commands) still meet the busy handler.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub struct WriteGate {
    /// (next ticket to hand out, ticket whose turn it is)
    tickets: Mutex<(u64, u64)>,
    turn: Condvar,
}

/// A writer's turn; the next ticket's holder goes when it is dropped.
pub struct Turn<'a> {
    gate: &'a WriteGate,
}

impl WriteGate {
    fn lock(&self) -> MutexGuard<'_, (u64, u64)> {
        // The counters stay consistent whatever panicked while holding the
        // lock (it is held only to read or bump them).
        self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait for this caller's turn.
    pub fn enter(&self) -> Turn<'_> {
        let mut g = self.lock();
        let mine = g.0;
        g.0 = g.0.wrapping_add(1);
        while g.1 != mine {
            g = self.turn.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
        Turn { gate: self }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut g = self.gate.lock();
        g.1 = g.1.wrapping_add(1);
        drop(g);
        self.gate.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn turns_are_exclusive_and_in_arrival_order() {
        let gate = Arc::new(WriteGate::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = gate.enter();
        let mut threads = Vec::new();
        for i in 0..4 {
            let (g, o) = (gate.clone(), order.clone());
            threads.push(std::thread::spawn(move || {
                let _t = g.enter();
                o.lock().unwrap().push(i);
            }));
            // Each thread has taken its ticket before the next one starts.
            while gate.lock().0 != i + 2 {
                std::thread::yield_now();
            }
        }
        assert!(
            order.lock().unwrap().is_empty(),
            "a turn began during another"
        );
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
    }
}
