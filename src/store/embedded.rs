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
        for e in events {
            let headers = e.headers.to_json();
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
