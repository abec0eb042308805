//! A durable job queue on SQLite, written the way durable Rust job queues
//! (apalis-sqlite, effectum) write theirs: the contender of rebound's
//! journal in `benches/durable.rs`.
//!
//! - One database file in WAL mode (`journal_mode=WAL`), `synchronous=NORMAL`
//!   (survives a process crash; the WAL is synced only at checkpoints) or
//!   `synchronous=FULL` (survives power loss: every commit syncs the WAL).
//! - One row per message:
//!   `jobs(id INTEGER PRIMARY KEY, payload BLOB, state, attempts, lease_until, due)`,
//!   with an index on `(state, id)` so that a claim finds the oldest pending
//!   job without a scan or a sort.
//! - produce = `INSERT`; claim = one `UPDATE ... RETURNING` that marks the
//!   oldest due pending job held, counts the attempt and sets its lease;
//!   ack = `DELETE` by id. Each is its own transaction (autocommit), as a
//!   job queue does when every call must be durable when it returns.
//! - One connection per thread, `busy_timeout` 5 s (SQLite has one writer at
//!   a time; the others wait in its busy handler).
//! - Consumers that find nothing wait on an in-process condvar that
//!   producers signal after their commit (what effectum does in-process),
//!   with a short timeout, instead of polling the database in a loop.
//!
//! Its fsyncs are counted exactly: the connections open the database
//! through [`counting_vfs`], SQLite's own default VFS with every file's
//! `xSync` counted (commits in `FULL`, checkpoints in both modes).

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SQLite's `synchronous` setting, the durability knob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Synchronous {
    /// Process-crash safe: a commit writes the WAL without syncing it.
    Normal,
    /// Power-loss safe: every commit syncs the WAL (one fsync per commit).
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS jobs (
        id          INTEGER PRIMARY KEY,
        payload     BLOB    NOT NULL,
        state       TEXT    NOT NULL DEFAULT 'pending',
        attempts    INTEGER NOT NULL DEFAULT 0,
        lease_until INTEGER,
        due         INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS jobs_claim ON jobs (state, id);
";

const INSERT: &str =
    "INSERT INTO jobs (payload, state, attempts, due) VALUES (?1, 'pending', 0, ?2)";
const CLAIM: &str = "
    UPDATE jobs SET state = 'held', attempts = attempts + 1, lease_until = ?1
    WHERE id = (SELECT id FROM jobs WHERE state = 'pending' AND due <= ?2 ORDER BY id LIMIT 1)
    RETURNING id, payload, attempts";
const ACK: &str = "DELETE FROM jobs WHERE id = ?1";

/// Wall-clock milliseconds since the Unix epoch, as job queues store times.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The queue: where its database is, and what its connections share.
pub(crate) struct SqliteQueue {
    path: PathBuf,
    synchronous: Synchronous,
    lease: Duration,
    /// Statements that still found the database busy after `busy_timeout`
    /// and were tried again.
    busy_retries: AtomicU64,
    /// Bumped by producers after each commit; consumers wait for a change.
    produced: Mutex<u64>,
    wake: Condvar,
}

/// A claimed job.
pub(crate) struct Job {
    pub(crate) id: i64,
    pub(crate) payload: Vec<u8>,
    pub(crate) attempts: i64,
}

impl SqliteQueue {
    /// Creates the database `queue.db` in `dir` (which must exist) with the
    /// schema, in WAL mode.
    pub(crate) fn create(
        dir: &Path,
        synchronous: Synchronous,
        lease: Duration,
    ) -> rusqlite::Result<Self> {
        let queue = SqliteQueue {
            path: dir.join("queue.db"),
            synchronous,
            lease,
            busy_retries: AtomicU64::new(0),
            produced: Mutex::new(0),
            wake: Condvar::new(),
        };
        let db = queue.open_connection()?;
        db.execute_batch(SCHEMA)?;
        Ok(queue)
    }

    fn open_connection(&self) -> rusqlite::Result<Connection> {
        let db = Connection::open_with_flags_and_vfs(
            &self.path,
            OpenFlags::default(),
            counting_vfs::name(),
        )?;
        db.busy_timeout(Duration::from_secs(5))?;
        // journal_mode answers with a row: read it rather than execute it.
        let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        assert_eq!(mode, "wal", "SQLite refused WAL mode");
        db.execute_batch(&format!(
            "PRAGMA synchronous = {};",
            self.synchronous.pragma()
        ))?;
        Ok(db)
    }

    /// A connection for one thread.
    pub(crate) fn connect(&self) -> rusqlite::Result<Conn<'_>> {
        Ok(Conn {
            queue: self,
            db: self.open_connection()?,
        })
    }

    /// Statements retried after `SQLITE_BUSY` outlived `busy_timeout`.
    pub(crate) fn busy_retries(&self) -> u64 {
        self.busy_retries.load(Ordering::Relaxed)
    }
}

/// One thread's connection to the queue.
pub(crate) struct Conn<'q> {
    queue: &'q SqliteQueue,
    db: Connection,
}

impl Conn<'_> {
    /// Runs `f` until it does not fail with `SQLITE_BUSY`.
    fn retry_busy<R>(
        &mut self,
        mut f: impl FnMut(&Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        loop {
            match f(&self.db) {
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::DatabaseBusy => {
                    self.queue.busy_retries.fetch_add(1, Ordering::Relaxed);
                }
                other => return other,
            }
        }
    }

    /// `INSERT`s one job, due now, in its own transaction; then wakes a
    /// waiting consumer.
    pub(crate) fn produce(&mut self, payload: &[u8]) -> rusqlite::Result<i64> {
        let due = now_ms();
        let id = self.retry_busy(|db| {
            db.prepare_cached(INSERT)?.execute(params![payload, due])?;
            Ok(db.last_insert_rowid())
        })?;
        let q = self.queue;
        *q.produced.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        q.wake.notify_one();
        Ok(id)
    }

    /// Claims the oldest due pending job (one `UPDATE ... RETURNING`), or
    /// waits up to `wait` for a producer's commit and tries once more.
    pub(crate) fn claim(&mut self, wait: Duration) -> rusqlite::Result<Option<Job>> {
        let q = self.queue;
        let seen = *q.produced.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = self.try_claim()? {
            return Ok(Some(job));
        }
        let guard = q.produced.lock().unwrap_or_else(|e| e.into_inner());
        if *guard == seen {
            let (guard, _) = q
                .wake
                .wait_timeout_while(guard, wait, |n| *n == seen)
                .unwrap_or_else(|e| e.into_inner());
            drop(guard);
        } else {
            drop(guard);
        }
        self.try_claim()
    }

    fn try_claim(&mut self) -> rusqlite::Result<Option<Job>> {
        let now = now_ms();
        let lease_until = now + self.queue.lease.as_millis() as i64;
        let job = self.retry_busy(|db| {
            db.prepare_cached(CLAIM)?
                .query_row(params![lease_until, now], |r| {
                    Ok(Job {
                        id: r.get(0)?,
                        payload: r.get(1)?,
                        attempts: r.get(2)?,
                    })
                })
                .optional()
        })?;
        Ok(job)
    }

    /// `DELETE`s the job, in its own transaction.
    pub(crate) fn ack(&mut self, job: Job) -> rusqlite::Result<()> {
        let deleted = self.retry_busy(|db| db.prepare_cached(ACK)?.execute(params![job.id]))?;
        assert_eq!(deleted, 1, "job {} was not held", job.id);
        Ok(())
    }

    /// SQLite's plan for the claim, for a check that it uses the index.
    pub(crate) fn claim_plan(&self) -> rusqlite::Result<String> {
        let mut stmt = self.db.prepare(&format!("EXPLAIN QUERY PLAN {CLAIM}"))?;
        let rows = stmt.query_map(params![0i64, 0i64], |r| r.get::<_, String>(3))?;
        let details: rusqlite::Result<Vec<String>> = rows.collect();
        Ok(details?.join("; "))
    }
}

/// SQLite's default VFS under another name, with the `xSync` of every file
/// it opens counted: how many fsyncs (`fdatasync` / `fsync`, SQLite's
/// `unixSync`) the SQLite contenders make, checkpoints included.
pub(crate) mod counting_vfs {
    use rusqlite::ffi;
    use std::ffi::{CStr, c_int};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    const NAME: &CStr = c"rebound-bench-counting";

    type Open = unsafe extern "C" fn(
        *mut ffi::sqlite3_vfs,
        ffi::sqlite3_filename,
        *mut ffi::sqlite3_file,
        c_int,
        *mut c_int,
    ) -> c_int;
    type Sync = unsafe extern "C" fn(*mut ffi::sqlite3_file, c_int) -> c_int;

    static SYNCS: AtomicU64 = AtomicU64::new(0);
    /// The default VFS's `xOpen`.
    static REAL_OPEN: OnceLock<Open> = OnceLock::new();
    /// Per table of file methods the default VFS gave a file (the unix VFS
    /// has one for database files and one, without locks, for WAL and
    /// journal files): its address, its `xSync`, and the address of our
    /// leaked copy of it whose `xSync` counts.
    static METHODS: Mutex<Vec<(usize, Sync, usize)>> = Mutex::new(Vec::new());

    fn tables() -> std::sync::MutexGuard<'static, Vec<(usize, Sync, usize)>> {
        METHODS.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// fsyncs SQLite made so far through this VFS, in this process.
    pub(crate) fn syncs() -> u64 {
        SYNCS.load(Ordering::Relaxed)
    }

    /// The VFS's name, registered on first use.
    pub(crate) fn name() -> &'static str {
        static REGISTERED: OnceLock<()> = OnceLock::new();
        REGISTERED.get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS (it
            // initialises SQLite first); it lives as long as the process.
            let default = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
            assert!(!default.is_null(), "SQLite has no default VFS");
            // SAFETY: `default` points to a valid `sqlite3_vfs` (above).
            let mut vfs = unsafe { *default };
            let _ = REAL_OPEN.set(vfs.xOpen.expect("the default VFS opens files"));
            vfs.xOpen = Some(open);
            vfs.zName = NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            // Everything else (`pAppData`, `szOsFile`, ...) is the default
            // VFS's own, so its functions work on this copy.
            let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
            // SAFETY: `vfs` is a complete VFS that lives forever, and is
            // registered once.
            let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
            assert_eq!(rc, ffi::SQLITE_OK, "register the counting VFS");
        });
        NAME.to_str().expect("ASCII name")
    }

    /// Opens the file with the default VFS, then points it at our copy of
    /// its methods, whose `xSync` counts.
    unsafe extern "C" fn open(
        vfs: *mut ffi::sqlite3_vfs,
        name: ffi::sqlite3_filename,
        file: *mut ffi::sqlite3_file,
        flags: c_int,
        out_flags: *mut c_int,
    ) -> c_int {
        let real_open = REAL_OPEN.get().expect("registered");
        // SAFETY: SQLite's own arguments for this `xOpen`, passed on to the
        // `xOpen` of the VFS that this one copies (same `szOsFile`).
        let rc = unsafe { real_open(vfs, name, file, flags, out_flags) };
        // SAFETY: `file` points to the `sqlite3_file` SQLite gave xOpen.
        let methods = unsafe { (*file).pMethods };
        if rc != ffi::SQLITE_OK || methods.is_null() {
            return rc;
        }
        let mut tables = tables();
        let ours = match tables.iter().find(|t| t.0 == methods as usize) {
            Some(&(_, _, ours)) => ours,
            None => {
                // SAFETY: `methods` is the VFS's static table of file methods.
                let mut copy = unsafe { *methods };
                let sync = copy.xSync.expect("files sync");
                copy.xSync = Some(counted_sync);
                let ours: &'static ffi::sqlite3_io_methods = Box::leak(Box::new(copy));
                let ours = ours as *const ffi::sqlite3_io_methods as usize;
                tables.push((methods as usize, sync, ours));
                ours
            }
        };
        drop(tables);
        // SAFETY: as above; SQLite only compares `pMethods` with null or
        // with its in-memory files' tables, so another table with the same
        // functions (but `xSync`) is fine.
        unsafe { (*file).pMethods = ours as *const ffi::sqlite3_io_methods };
        rc
    }

    unsafe extern "C" fn counted_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
        SYNCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `file` is an open file whose methods `open` set.
        let ours = unsafe { (*file).pMethods } as usize;
        let sync = tables()
            .iter()
            .find(|t| t.2 == ours)
            .map(|t| t.1)
            .expect("a file opened by `open`");
        // SAFETY: the default VFS's own `xSync` for a file it opened.
        unsafe { sync(file, flags) }
    }
}
