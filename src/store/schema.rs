//! The schema and the connections: the migrations embedded from
//! `migrations/` (rusqlite_migration's directory layout, version kept in
//! `PRAGMA user_version`), and the set-up of the writer connection (WAL,
//! `synchronous=FULL`, foreign keys, busy timeout, migrations) and of
//! read-only connections (schema version check).
//!
//! PRAGMAs live here, in code, not in the migrations: `synchronous` and
//! `foreign_keys` are per connection, and `journal_mode` cannot change
//! inside the migrations' transaction.

use super::StoreError;
use include_dir::{include_dir, Dir};
use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::Migrations;
use std::path::Path;
use std::time::Duration;

static MIGRATIONS_DIR: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/migrations");

/// Prepared statements kept per connection (rusqlite's default is 16; the
/// writer uses about 20 distinct statements).
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// The store's migrations, in order.
pub fn migrations() -> Result<Migrations<'static>, StoreError> {
    Ok(Migrations::from_directory(&MIGRATIONS_DIR)?)
}

/// Open (creating if needed) the database for writing: PRAGMAs first, then
/// the pending migrations. A database already at the latest version is
/// left untouched.
pub(super) fn open_writer(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let mut conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);

    // journal_mode is persistent in the file; it answers with the mode in force.
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Pragma {
            pragma: "journal_mode",
            wanted: "wal",
            actual: mode,
        });
    }
    // Per connection: fsync the WAL at every commit, so an acknowledged
    // input survives a power loss or an OS crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let sync: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    if sync != 2 {
        return Err(StoreError::Pragma {
            pragma: "synchronous",
            wanted: "2 (FULL)",
            actual: sync.to_string(),
        });
    }
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let fk: i64 = conn.pragma_query_value(None, "foreign_keys", |row| row.get(0))?;
    if fk != 1 {
        return Err(StoreError::Pragma {
            pragma: "foreign_keys",
            wanted: "1 (ON)",
            actual: fk.to_string(),
        });
    }

    let migrations = migrations()?;
    let pending = migrations.pending_migrations(&conn)?;
    if pending < 0 {
        return Err(StoreError::SchemaVersion(format!(
            "the database is {} migration(s) ahead of this build",
            -i64::from(pending)
        )));
    }
    if pending > 0 {
        migrations.to_latest(&mut conn)?;
        tracing::info!(path = %path.display(), applied = pending, "store schema migrated");
    }
    // The SQLite docs' advice for a long-lived connection: optimize once at
    // open (0x10002: with a limit on the work for large tables), then
    // periodically (the daemon's maintenance, and at close).
    conn.execute_batch("PRAGMA optimize=0x10002")?;
    Ok(conn)
}

/// Open an existing database read-only, checking that its schema is the
/// one this build knows.
pub(super) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    let pending = migrations()?.pending_migrations(&conn)?;
    if pending != 0 {
        return Err(StoreError::SchemaVersion(format!(
            "{pending} migration(s) pending (negative: the database is newer)"
        )));
    }
    Ok(conn)
}
