//! The insert loop shared by the two SQLite files: the embedded store
//! (`sqlite.rs`, table `events`) and the PostgreSQL outage spool
//! (`spool.rs`, table `spool`). Neither engine imports the other.

use rusqlite::{params, Connection, TransactionBehavior};

use super::{to_micros, NewEvent, Outcome};

/// Insert `events` in one immediate transaction. `insert` takes the eight
/// columns (id, hook_id, delivery_id, event_type, received_at, headers,
/// body, state) and ends in `ON CONFLICT (hook_id, delivery_id) DO
/// NOTHING`; `existing` finds the id of the row a duplicate ran into.
/// A new row becomes `fresh(id)`, a duplicate keeps the first row's id.
pub(super) fn insert_batch(
    conn: &mut Connection,
    insert: &str,
    existing: &str,
    events: &[NewEvent],
    fresh: fn(String) -> Outcome,
) -> rusqlite::Result<Vec<Outcome>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(events.len());
    {
        let mut ins = tx.prepare_cached(insert)?;
        let mut sel = tx.prepare_cached(existing)?;
        for e in events {
            let n = ins.execute(params![
                e.id,
                e.hook_id,
                e.delivery_id,
                e.event_type,
                to_micros(e.received_at),
                e.headers.to_json(),
                &e.body[..],
                e.state.as_str(),
            ])?;
            if n == 1 {
                out.push(fresh(e.id.clone()));
            } else {
                let id: String = sel.query_row(params![e.hook_id, e.delivery_id], |r| r.get(0))?;
                out.push(Outcome::Duplicate(id));
            }
        }
    }
    tx.commit()?;
    Ok(out)
}
