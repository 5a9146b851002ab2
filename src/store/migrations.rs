//! Schema migrations, embedded in the binary so a package upgrade carries
//! its own schema. Applied in order, each in its own transaction, recorded in
//! `webhookd_schema`; engines take a lock so two instances starting together
//! do not race.

/// One migration step.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../../migrations/postgres/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "attempts",
        sql: include_str!("../../migrations/postgres/0002_attempts.sql"),
    },
    Migration {
        version: 3,
        name: "schema_applied_by",
        sql: include_str!("../../migrations/postgres/0003_schema_applied_by.sql"),
    },
    Migration {
        version: 4,
        name: "attempt_error",
        sql: include_str!("../../migrations/postgres/0004_attempt_error.sql"),
    },
    Migration {
        version: 5,
        name: "deliveries",
        sql: include_str!("../../migrations/postgres/0005_deliveries.sql"),
    },
    Migration {
        version: 6,
        name: "event_bodies",
        sql: include_str!("../../migrations/postgres/0006_event_bodies.sql"),
    },
];

pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../../migrations/sqlite/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "attempts",
        sql: include_str!("../../migrations/sqlite/0002_attempts.sql"),
    },
    Migration {
        version: 3,
        name: "schema_applied_by",
        sql: include_str!("../../migrations/sqlite/0003_schema_applied_by.sql"),
    },
    Migration {
        version: 4,
        name: "attempt_error",
        sql: include_str!("../../migrations/sqlite/0004_attempt_error.sql"),
    },
    Migration {
        version: 5,
        name: "deliveries",
        sql: include_str!("../../migrations/sqlite/0005_deliveries.sql"),
    },
    Migration {
        version: 6,
        name: "event_bodies",
        sql: include_str!("../../migrations/sqlite/0006_event_bodies.sql"),
    },
];

/// From this version on, `webhookd_schema.applied_by` records the webhookd
/// version that applied a migration.
pub const APPLIED_BY_SINCE: i32 = 3;

/// The newest version in a list.
pub fn latest(list: &[Migration]) -> i32 {
    list.iter().map(|m| m.version).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_increasing_and_engines_agree() {
        for list in [POSTGRES, SQLITE] {
            for w in list.windows(2) {
                assert!(w[0].version < w[1].version);
            }
        }
        assert_eq!(latest(POSTGRES), latest(SQLITE));
    }
}
