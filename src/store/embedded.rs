//! The insert loop shared by the two SQLite files: the embedded store
//! (`sqlite.rs`, table `events`) and the PostgreSQL outage spool
//! (`spool.rs`, table `spool`). Neither engine imports the other.

use rusqlite::{params, Connection, TransactionBehavior};

use super::{to_micros, NewEvent, Outcome};

/// The statements of one file's insert.
pub(super) struct InsertSql {
    /// Takes the eight values (id, hook_id, delivery_id, event_type,
    /// received_at, headers, body, state) and ends in `ON CONFLICT
    /// (hook_id, delivery_id) DO NOTHING`.
    pub event: &'static str,
    /// Run after a new row only, with (id, headers, body): where a file
    /// keeps them apart from the event row.
    pub body: Option<&'static str>,
    /// Finds the id of the row a duplicate ran into.
    pub existing: &'static str,
    /// Where a file stores deliveries with their event
    /// ([`NewEvent::actions`]): the event's insert marked as fanned out
    /// (same values as `event`), and the insert of one delivery, taking
    /// (event_id, action_id, hook_id, received_at). `None`: actions are
    /// ignored.
    pub fan_out: Option<(&'static str, &'static str)>,
}

/// Insert `events` in one immediate transaction. A new row becomes
/// `fresh(id)`, a duplicate keeps the first row's id.
pub(super) fn insert_batch(
    conn: &mut Connection,
    sql: &InsertSql,
    events: &[NewEvent],
    fresh: fn(String) -> Outcome,
) -> rusqlite::Result<Vec<Outcome>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(events.len());
    {
        let mut ins = tx.prepare_cached(sql.event)?;
        let mut sel = tx.prepare_cached(sql.existing)?;
        let mut body = match sql.body {
            Some(b) => Some(tx.prepare_cached(b)?),
            None => None,
        };
        let mut fan_out = match sql.fan_out {
            Some((event, delivery)) if events.iter().any(|e| e.actions.is_some()) => {
                Some((tx.prepare_cached(event)?, tx.prepare_cached(delivery)?))
            }
            _ => None,
        };
        for e in events {
            let headers = e.headers.to_json();
            let (ins, deliveries) = match (&mut fan_out, &e.actions) {
                (Some((fanned, delivery)), Some(actions)) => (fanned, Some((delivery, actions))),
                _ => (&mut ins, None),
            };
            let n = ins.execute(params![
                e.id,
                e.hook_id,
                e.delivery_id,
                e.event_type,
                to_micros(e.received_at),
                headers,
                &e.body[..],
                e.state.as_str(),
            ])?;
            if n == 1 {
                if let Some(b) = body.as_mut() {
                    b.execute(params![e.id, headers, &e.body[..]])?;
                }
                if let Some((delivery, actions)) = deliveries {
                    for a in actions {
                        delivery.execute(params![e.id, a, e.hook_id, to_micros(e.received_at)])?;
                    }
                }
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
