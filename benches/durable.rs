//! Durable queues (issue 15): rebound's journal against the in-memory queue
//! and against what users would otherwise use, a SQLite-backed job queue
//! written as durable Rust job queues write theirs
//! (`benches/durable/sqlite_queue.rs`), measured side by side in one run.
//!
//! Groups (`<threads>/<payload>`, payload a `Vec<u8>` of 8 B or 1 KiB):
//! - `1p1c/{8B,1KiB}`: one producer, one consumer, produce -> consume -> ack:
//!   rebound in-memory (`Queue::builder().build()`), rebound `Buffered`,
//!   rebound `Fsync`, SQLite `synchronous=NORMAL`, SQLite `synchronous=FULL`;
//! - `16p2c/{8B,1KiB}`: 16 producers, 2 consumers: rebound `Fsync` against
//!   SQLite `FULL` (one connection per thread);
//! - `open/8B/{10k,100k,1M}`: a `Buffered` journal holding that many pending
//!   8 B messages is reopened; `Recovery::elapsed` (the time `open` took).
//!
//! A run of a throughput group gets a fresh queue in a fresh directory. Its
//! producers stop after `--messages` messages (split between them) or
//! `--seconds`, whichever comes first, so the fast contenders settle a fixed
//! count and the slow ones run for a fixed time; the consumers then settle
//! everything that was produced. A run's rate is messages acked divided by
//! the time from the first worker's start to the last ack. Runs are
//! interleaved (run 1 of every contender, then run 2, ...), so that a change
//! in the machine's load hits all of them alike; the tables give the median
//! over `--runs` runs.
//!
//! fsyncs: rebound's `journal_stats().syncs` before and after the run.
//! SQLite's are counted exactly, by a VFS shim that counts `xSync` calls
//! (`sqlite_queue::counting_vfs`): every produce, claim and ack is its own
//! transaction; in WAL mode with `synchronous=FULL` each commit syncs the
//! WAL once, and with `NORMAL` only checkpoints sync (WAL and database).
//!
//! Prints a markdown report and writes `target/bench-data/durable.md` and
//! `durable.json` (`benches/report.rs` adds the former to
//! docs/benchmarks.md).
//!
//! Run: `cargo bench --bench durable` (`-- --help` for the flags, e.g.
//! `-- --runs 1 --seconds 0.2 --open-sizes 10000` for a smoke test).

mod common;
#[path = "durable/sqlite_queue.rs"]
mod sqlite_queue;

use clap::Parser;
use rebound::{Delivery, Durability, Queue};
use serde_json::json;
use sqlite_queue::{Conn, SqliteQueue, Synchronous};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    about = "Durable queues: rebound's journal against in-memory rebound and a SQLite job queue"
)]
struct Args {
    /// Runs per figure; the tables give the median.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// At most this many messages per throughput run (split between the
    /// producers): the fast contenders end here.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// At most this long per throughput run, in seconds (producers stop,
    /// consumers settle what was produced): the slow contenders end here.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Journal sizes (pending 8 B messages) whose open time is measured.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000, 1_000_000])]
    open_sizes: Vec<u64>,
    /// Reopens per journal size (the table gives the median).
    #[arg(long, default_value_t = 3)]
    open_runs: usize,
    /// Only the groups whose name contains this (`1p1c`, `16p2c`, `8B`,
    /// `open`, ...).
    #[arg(long)]
    only: Option<String>,
    /// Where the queues' files go, one fresh directory per run, removed
    /// after it. It must be on a real disk for fsync to mean anything (a
    /// tmpfs makes it free). Default: `<target>/durable-tmp`.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    /// Internal (child process): fill the journal in this directory.
    #[arg(long, hide = true)]
    fill: Option<PathBuf>,
    /// Internal (child process): reopen the journal in this directory.
    #[arg(long, hide = true)]
    reopen: Option<PathBuf>,
    /// Internal (child process): consume the oldest message after reopening.
    #[arg(long, hide = true)]
    check_first: bool,
    /// Internal (child process): messages to fill, or expected back.
    #[arg(long, hide = true, default_value_t = 0)]
    count: u64,
}

/// Consumers that find nothing wait this long before looking at whether the
/// run is over (a message that arrives meanwhile wakes them at once).
const WAIT: Duration = Duration::from_millis(2);
/// Consumers publish their acks in chunks of this many while producers run.
const FLUSH: u64 = 256;
const LEASE: Duration = Duration::from_secs(30);
const PAYLOADS: [(usize, &str); 2] = [(8, "8B"), (1024, "1KiB")];

// ---------------------------------------------------------------------------
// Contenders
// ---------------------------------------------------------------------------

/// One queue under test, shared by the run's threads; each thread works
/// through its own [`Worker`] (SQLite: its own connection).
trait Contender: Sync {
    type Worker<'a>: Worker
    where
        Self: 'a;
    fn worker(&self) -> Self::Worker<'_>;
    /// fsyncs so far, where the contender makes any.
    fn syncs(&self) -> Option<u64>;
    /// Bytes written to its files so far, where known.
    fn bytes_written(&self) -> Option<u64>;
}

trait Worker {
    type Claim;
    fn produce(&mut self, payload: Vec<u8>);
    /// A claimed message, or `None` if none came within `wait`.
    fn claim(&mut self, wait: Duration) -> Option<Self::Claim>;
    fn payload(claim: &Self::Claim) -> &[u8];
    fn ack(&mut self, claim: Self::Claim);
    /// Makes the acks so far final (a worker that batches them); called
    /// before a consumer publishes its count.
    fn flush(&mut self) {}
}

/// The five contenders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Memory,
    Buffered,
    Fsync,
    /// `Fsync`, consumers claiming and acking batches (`try_consume_batch`,
    /// `ack_batch`: one sync per batch of acks).
    FsyncBatched,
    SqliteNormal,
    SqliteFull,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Memory => "rebound in-memory",
            Kind::Buffered => "rebound Buffered",
            Kind::Fsync => "rebound Fsync",
            Kind::FsyncBatched => "rebound Fsync batches",
            Kind::SqliteNormal => "SQLite NORMAL",
            Kind::SqliteFull => "SQLite FULL",
        }
    }

    fn durable(self) -> bool {
        self != Kind::Memory
    }
}

/// A directory for one run, removed (with everything in it) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(base: &Path, tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create run directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// rebound, in memory or with a journal. The queue is dropped before its
/// directory is removed (fields drop in order).
struct Rebound {
    queue: Queue<Vec<u8>>,
    _dir: Option<TempDir>,
}

fn open_journal(dir: &Path, durability: Durability) -> Queue<Vec<u8>> {
    Queue::builder()
        .lease(LEASE)
        .journal(dir)
        .durability(durability)
        .open()
        .unwrap_or_else(|e| panic!("open journal {}: {e}", dir.display()))
}

impl Rebound {
    fn new(kind: Kind, base: &Path) -> Self {
        let durability = match kind {
            Kind::Memory => {
                return Rebound {
                    queue: Queue::builder().lease(LEASE).build(),
                    _dir: None,
                };
            }
            Kind::Buffered => Durability::Buffered,
            Kind::Fsync | Kind::FsyncBatched => Durability::Fsync,
            Kind::SqliteNormal | Kind::SqliteFull => unreachable!("not rebound"),
        };
        let dir = TempDir::new(base, "rebound");
        // A directory that does not exist yet: `journal` creates it.
        let queue = open_journal(&dir.0.join("journal"), durability);
        Rebound {
            queue,
            _dir: Some(dir),
        }
    }
}

impl Contender for Rebound {
    type Worker<'a> = &'a Queue<Vec<u8>>;
    fn worker(&self) -> &Queue<Vec<u8>> {
        &self.queue
    }
    fn syncs(&self) -> Option<u64> {
        self.queue.journal_stats().map(|s| s.syncs)
    }
    fn bytes_written(&self) -> Option<u64> {
        self.queue.journal_stats().map(|s| s.bytes_written)
    }
}

impl Worker for &Queue<Vec<u8>> {
    type Claim = Delivery<Vec<u8>>;
    fn produce(&mut self, payload: Vec<u8>) {
        if Queue::produce(self, payload).is_err() {
            panic!("rebound refused a produce");
        }
    }
    fn claim(&mut self, wait: Duration) -> Option<Self::Claim> {
        match self.try_consume() {
            Ok(delivery) => Some(delivery),
            Err(_) => self.consume_timeout(wait).ok(),
        }
    }
    fn payload(claim: &Self::Claim) -> &[u8] {
        claim
    }
    fn ack(&mut self, claim: Self::Claim) {
        if claim.ack().is_err() {
            panic!("rebound refused an ack");
        }
    }
}

/// A rebound journal whose consumers claim and ack in batches.
struct Batched(Rebound);

impl Contender for Batched {
    type Worker<'a> = BatchWorker<'a>;
    fn worker(&self) -> BatchWorker<'_> {
        BatchWorker {
            queue: &self.0.queue,
            claimed: std::collections::VecDeque::new(),
            acks: Vec::new(),
        }
    }
    fn syncs(&self) -> Option<u64> {
        self.0.syncs()
    }
    fn bytes_written(&self) -> Option<u64> {
        self.0.bytes_written()
    }
}

/// Claims up to [`BATCH`] at a time and acks them together.
struct BatchWorker<'a> {
    queue: &'a Queue<Vec<u8>>,
    claimed: std::collections::VecDeque<Delivery<Vec<u8>>>,
    acks: Vec<Delivery<Vec<u8>>>,
}

/// Claims per batch of [`BatchWorker`].
const BATCH: usize = 64;

impl Worker for BatchWorker<'_> {
    type Claim = Delivery<Vec<u8>>;
    fn produce(&mut self, payload: Vec<u8>) {
        if self.queue.produce(payload).is_err() {
            panic!("rebound refused a produce");
        }
    }
    fn claim(&mut self, wait: Duration) -> Option<Self::Claim> {
        if self.claimed.is_empty() {
            // Settle the last batch before taking the next.
            self.flush();
            match self.queue.try_consume_batch(BATCH) {
                Ok(batch) => self.claimed.extend(batch),
                Err(_) => self.claimed.extend(self.queue.consume_timeout(wait).ok()),
            }
        }
        self.claimed.pop_front()
    }
    fn payload(claim: &Self::Claim) -> &[u8] {
        claim
    }
    fn ack(&mut self, claim: Self::Claim) {
        self.acks.push(claim);
    }
    fn flush(&mut self) {
        let n = self.acks.len();
        if n > 0 && self.queue.ack_batch(self.acks.drain(..)) != n {
            panic!("rebound refused an ack");
        }
    }
}

/// The SQLite job queue in a fresh directory.
struct Sqlite {
    queue: SqliteQueue,
    _dir: TempDir,
}

impl Sqlite {
    fn new(kind: Kind, base: &Path) -> Self {
        let synchronous = match kind {
            Kind::SqliteNormal => Synchronous::Normal,
            Kind::SqliteFull => Synchronous::Full,
            _ => unreachable!("not SQLite"),
        };
        let dir = TempDir::new(base, "sqlite");
        let queue = SqliteQueue::create(&dir.0, synchronous, LEASE).expect("create SQLite queue");
        Sqlite { queue, _dir: dir }
    }
}

impl Contender for Sqlite {
    type Worker<'a> = Conn<'a>;
    fn worker(&self) -> Conn<'_> {
        self.queue.connect().expect("connect to SQLite")
    }
    /// Counted by the VFS under SQLite (runs do not overlap).
    fn syncs(&self) -> Option<u64> {
        Some(sqlite_queue::counting_vfs::syncs())
    }
    fn bytes_written(&self) -> Option<u64> {
        None
    }
}

impl Worker for Conn<'_> {
    type Claim = sqlite_queue::Job;
    fn produce(&mut self, payload: Vec<u8>) {
        Conn::produce(self, &payload).expect("SQLite insert");
    }
    fn claim(&mut self, wait: Duration) -> Option<Self::Claim> {
        let job = Conn::claim(self, wait).expect("SQLite claim");
        if let Some(job) = &job {
            assert_eq!(job.attempts, 1, "nothing is redelivered in these runs");
        }
        job
    }
    fn payload(claim: &Self::Claim) -> &[u8] {
        &claim.payload
    }
    fn ack(&mut self, claim: Self::Claim) {
        Conn::ack(self, claim).expect("SQLite delete");
    }
}

// ---------------------------------------------------------------------------
// One throughput run
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Sample {
    messages: u64,
    /// First worker's start to the last ack.
    elapsed: Duration,
    /// First worker's start to the last producer's last produce.
    producing: Duration,
    syncs: Option<u64>,
    bytes: Option<u64>,
}

impl Sample {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
    /// How fast the producers went (their produce calls returned).
    fn produce_rate(&self) -> f64 {
        self.messages as f64 / self.producing.as_secs_f64()
    }
    fn syncs_per_s(&self) -> Option<f64> {
        Some(self.syncs? as f64 / self.elapsed.as_secs_f64())
    }
    fn messages_per_sync(&self) -> Option<f64> {
        let syncs = self.syncs?;
        (syncs > 0).then(|| self.messages as f64 / syncs as f64)
    }
    fn bytes_per_message(&self) -> Option<f64> {
        Some(self.bytes? as f64 / self.messages as f64)
    }
}

/// `producers` threads produce `size`-byte messages (at most `cap` in all,
/// for at most `limit`); `consumers` threads claim and ack them until every
/// produced message is acked.
fn run<C: Contender>(
    c: &C,
    producers: usize,
    consumers: usize,
    size: usize,
    cap: u64,
    limit: Duration,
) -> Sample {
    let start = Barrier::new(producers + consumers);
    let base = Instant::now();
    let now_ns = || base.elapsed().as_nanos() as u64;
    let first_start = AtomicU64::new(u64::MAX);
    let last_ack = AtomicU64::new(0);
    let last_produce = AtomicU64::new(0);
    let produced = AtomicU64::new(0);
    let producers_done = AtomicUsize::new(0);
    let acked = AtomicU64::new(0);
    let (syncs_before, bytes_before) = (c.syncs(), c.bytes_written());
    thread::scope(|s| {
        for p in 0..producers {
            let (start, first_start, last_produce, produced, producers_done) = (
                &start,
                &first_start,
                &last_produce,
                &produced,
                &producers_done,
            );
            s.spawn(move || {
                let mut w = c.worker();
                let per = cap / producers as u64 + u64::from((p as u64) < cap % producers as u64);
                start.wait();
                let t0 = now_ns();
                first_start.fetch_min(t0, Ordering::Relaxed);
                let deadline = t0 + limit.as_nanos() as u64;
                let mut n = 0;
                while n < per {
                    if n % 16 == 0 && now_ns() >= deadline {
                        break;
                    }
                    let mut payload = vec![0u8; size];
                    payload[..8].copy_from_slice(&n.to_le_bytes());
                    w.produce(payload);
                    n += 1;
                }
                last_produce.fetch_max(now_ns(), Ordering::Relaxed);
                produced.fetch_add(n, Ordering::SeqCst);
                producers_done.fetch_add(1, Ordering::SeqCst);
            });
        }
        for _ in 0..consumers {
            let (start, first_start, last_ack, produced, producers_done, acked) = (
                &start,
                &first_start,
                &last_ack,
                &produced,
                &producers_done,
                &acked,
            );
            s.spawn(move || {
                let mut w = c.worker();
                start.wait();
                first_start.fetch_min(now_ns(), Ordering::Relaxed);
                let mut local = 0;
                // Publishes this consumer's acks (and the time of the last);
                // true once every produced message is acked.
                let flush = |local: &mut u64| -> bool {
                    if *local > 0 {
                        acked.fetch_add(*local, Ordering::SeqCst);
                        last_ack.fetch_max(now_ns(), Ordering::Relaxed);
                        *local = 0;
                    }
                    producers_done.load(Ordering::SeqCst) == producers
                        && acked.load(Ordering::SeqCst) == produced.load(Ordering::SeqCst)
                };
                loop {
                    match w.claim(WAIT) {
                        Some(claim) => {
                            std::hint::black_box(C::Worker::payload(&claim));
                            w.ack(claim);
                            local += 1;
                            // Once the producers are done, every ack is
                            // published at once, so the last one is timed.
                            let tail = producers_done.load(Ordering::Relaxed) == producers;
                            if local == FLUSH || tail {
                                w.flush();
                                if flush(&mut local) {
                                    return;
                                }
                            }
                        }
                        None => {
                            w.flush();
                            if flush(&mut local) {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let messages = produced.load(Ordering::SeqCst);
    assert_eq!(
        acked.load(Ordering::SeqCst),
        messages,
        "every message acked"
    );
    let start = first_start.load(Ordering::Relaxed);
    let end = last_ack.load(Ordering::Relaxed).max(start + 1);
    Sample {
        messages,
        elapsed: Duration::from_nanos(end - start),
        producing: Duration::from_nanos(
            last_produce.load(Ordering::Relaxed).max(start + 1) - start,
        ),
        syncs: c.syncs().zip(syncs_before).map(|(a, b)| a - b),
        bytes: c.bytes_written().zip(bytes_before).map(|(a, b)| a - b),
    }
}

// ---------------------------------------------------------------------------
// Open time
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct OpenSample {
    /// `Recovery::elapsed`: the time `open` took, by the queue's own clock.
    recovery: Duration,
    /// `open()` as the caller sees it.
    wall: Duration,
    records: u64,
}

struct OpenResult {
    messages: u64,
    fill: Duration,
    /// Record bytes the filling queue wrote (`journal_stats().bytes_written`).
    written: u64,
    /// Size of the journal's files (segments may be preallocated).
    disk_bytes: u64,
    samples: Vec<OpenSample>,
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Child process: fills the `Buffered` journal in `dir` with `messages`
/// pending 8 B messages (one `produce` each, the payload its number), and
/// prints the record bytes written.
fn fill_child(dir: &Path, messages: u64) {
    let q = open_journal(dir, Durability::Buffered);
    for i in 0..messages {
        if q.produce(i.to_le_bytes().to_vec()).is_err() {
            panic!("rebound refused a produce");
        }
    }
    println!("{}", q.journal_stats().map_or(0, |s| s.bytes_written));
}

/// Child process: opens the journal in `dir`, checks that the `messages`
/// messages are back (and, with `check_first`, oldest first), and prints `Recovery::elapsed` and
/// `open()`'s wall time (ns) and the records replayed.
fn reopen_child(dir: &Path, messages: u64, check_first: bool) {
    let t = Instant::now();
    let q = open_journal(dir, Durability::Buffered);
    let wall = t.elapsed();
    let recovery = q.recovery().expect("a journal queue reports its recovery");
    assert_eq!(
        recovery.pending, messages,
        "every message came back: {recovery:?}"
    );
    if check_first {
        // The oldest first. (Dropped unsettled, it goes back delayed by the
        // backoff: only the last reopen checks.)
        let first = q.try_consume().expect("recovered messages are ready");
        assert_eq!(first.as_slice(), 0u64.to_le_bytes(), "oldest first");
    }
    println!(
        "{} {} {}",
        recovery.elapsed.as_nanos(),
        wall.as_nanos(),
        recovery.records
    );
}

/// Runs this bench binary as a child with `args`; its standard output.
fn child(args: &[&std::ffi::OsStr]) -> String {
    let exe = std::env::current_exe().expect("own path");
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "child {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Fills a `Buffered` journal with `messages` pending 8 B messages in one
/// child process, then opens it in `reopens` more, one after the other: a
/// restart is a new process (and a dropped queue's directory lock is then
/// surely released).
fn open_time(base: &Path, messages: u64, reopens: usize) -> OpenResult {
    let dir = TempDir::new(base, "open");
    let journal = dir.0.join("journal");
    let n = messages.to_string();
    let fill_start = Instant::now();
    let written: u64 = child(&[
        "--fill".as_ref(),
        journal.as_os_str(),
        "--count".as_ref(),
        n.as_ref(),
    ])
    .trim()
    .parse()
    .expect("bytes written");
    let fill = fill_start.elapsed();
    let disk_bytes = dir_bytes(&journal);
    let samples = (0..reopens)
        .map(|i| {
            let mut args = vec![
                "--reopen".as_ref(),
                journal.as_os_str(),
                "--count".as_ref(),
                n.as_ref(),
            ];
            if i + 1 == reopens {
                args.push("--check-first".as_ref());
            }
            let out = child(&args);
            let f: Vec<u64> = out
                .split_whitespace()
                .map(|v| v.parse().expect("number"))
                .collect();
            OpenSample {
                recovery: Duration::from_nanos(f[0]),
                wall: Duration::from_nanos(f[1]),
                records: f[2],
            }
        })
        .collect();
    OpenResult {
        messages,
        fill,
        written,
        disk_bytes,
        samples,
    }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// The median of `values` (sorted in place); NaN when empty.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = samples.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median(&mut v))
}

/// Messages (or fsyncs) per second, readable from 1 to 100 M.
fn per_s(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**not met**" }
}

/// The filesystem under `path` (longest matching mount point).
fn filesystem(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && path.starts_with(f[1]))
                .then(|| (f[1].len(), format!("{} ({})", f[2], f[0])))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Throughput samples: group -> contender -> runs.
type Results = BTreeMap<String, BTreeMap<Kind, Vec<Sample>>>;

fn group_name(threads: &str, payload: &str) -> String {
    format!("{threads}/{payload}")
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.fill {
        return fill_child(dir, args.count);
    }
    if let Some(dir) = &args.reopen {
        return reopen_child(dir, args.count, args.check_first);
    }
    let wanted = |group: &str| args.only.as_deref().is_none_or(|o| group.contains(o));
    let base = args.dir.clone().unwrap_or_else(|| {
        common::data_dir()
            .parent()
            .expect("target dir")
            .join("durable-tmp")
    });
    std::fs::create_dir_all(&base).expect("create the benchmark directory");
    let limit = Duration::from_secs_f64(args.seconds);
    let load_start = loadavg();
    let started = Instant::now();

    // The throughput groups and their contenders, in table order.
    let mut groups: Vec<(String, usize, usize, usize, Vec<Kind>)> = Vec::new();
    for (size, label) in PAYLOADS {
        groups.push((
            group_name("1p1c", label),
            1,
            1,
            size,
            vec![
                Kind::Memory,
                Kind::Buffered,
                Kind::Fsync,
                Kind::SqliteNormal,
                Kind::SqliteFull,
            ],
        ));
    }
    for (size, label) in PAYLOADS {
        groups.push((
            group_name("16p2c", label),
            16,
            2,
            size,
            vec![Kind::Fsync, Kind::FsyncBatched, Kind::SqliteFull],
        ));
    }
    groups.retain(|g| wanted(&g.0));

    {
        // The claim must walk the (state, id) index, not scan or sort.
        let dir = TempDir::new(&base, "plan");
        let q = SqliteQueue::create(&dir.0, Synchronous::Normal, LEASE).expect("SQLite");
        let plan = q.connect().and_then(|c| c.claim_plan()).expect("plan");
        println!("SQLite claim plan: {plan}");
        assert!(
            plan.contains("jobs_claim"),
            "the claim does not use its index: {plan}"
        );
    }

    let mut results = Results::new();
    let mut sqlite_busy = 0;
    for r in 0..args.runs {
        for (group, producers, consumers, size, kinds) in &groups {
            for &kind in kinds {
                let sample = match kind {
                    Kind::Memory | Kind::Buffered | Kind::Fsync => {
                        let c = Rebound::new(kind, &base);
                        run(&c, *producers, *consumers, *size, args.messages, limit)
                    }
                    Kind::FsyncBatched => {
                        let c = Batched(Rebound::new(kind, &base));
                        run(&c, *producers, *consumers, *size, args.messages, limit)
                    }
                    Kind::SqliteNormal | Kind::SqliteFull => {
                        let c = Sqlite::new(kind, &base);
                        let sample = run(&c, *producers, *consumers, *size, args.messages, limit);
                        sqlite_busy += c.queue.busy_retries();
                        sample
                    }
                };
                println!(
                    "run {}/{}  {group:<11} {:<18} {:>10} msg/s  {:>7} messages in {:>7.3} s  fsyncs {}",
                    r + 1,
                    args.runs,
                    kind.name(),
                    per_s(sample.rate()),
                    sample.messages,
                    sample.elapsed.as_secs_f64(),
                    sample.syncs.map_or("-".into(), |s| s.to_string()),
                );
                results
                    .entry(group.clone())
                    .or_default()
                    .entry(kind)
                    .or_default()
                    .push(sample);
            }
        }
    }

    let mut opens = Vec::new();
    if wanted("open/8B") {
        for &n in &args.open_sizes {
            let result = open_time(&base, n, args.open_runs);
            for s in &result.samples {
                println!(
                    "open  {n:>9} pending  recovery {:>8.1} ms  open() {:>8.1} ms  records {}",
                    s.recovery.as_secs_f64() * 1e3,
                    s.wall.as_secs_f64() * 1e3,
                    s.records
                );
            }
            opens.push(result);
        }
    }
    let _ = std::fs::remove_dir(&base);

    // ---- the report ----
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- generated by `cargo bench --bench durable` -->\n\n### Durable queues (median of {} runs)\n",
        args.runs
    );
    let _ = writeln!(
        out,
        "```\nfiles on:      {} ({})\nper run:       at most {} messages or {} s of producing, then drained\nload:          {} at start, {} at end; {:.0} s in all\nSQLite:        {} (bundled), busy retries after busy_timeout: {}\n```\n",
        base.strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(&base)
            .display(),
        filesystem(&base),
        args.messages,
        args.seconds,
        load_start,
        loadavg(),
        started.elapsed().as_secs_f64(),
        rusqlite::version(),
        sqlite_busy,
    );
    let rate = |group: &str, kind: Kind| -> Option<f64> {
        median_of(results.get(group)?.get(&kind)?, |s| Some(s.rate()))
    };
    if !results.is_empty() {
        let _ = writeln!(
            out,
            "| group | contender | msg/s | min - max | produced msg/s | fsyncs/s | msg per fsync | bytes written per msg |\n|---|---|---:|---:|---:|---:|---:|---:|"
        );
        for (group, _, _, _, kinds) in &groups {
            for kind in kinds {
                let Some(samples) = results.get(group).and_then(|g| g.get(kind)) else {
                    continue;
                };
                let rates: Vec<f64> = samples.iter().map(Sample::rate).collect();
                let (lo, hi) = rates
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let _ = writeln!(
                    out,
                    "| `{group}` | {} | {} | {} - {} | {} | {} | {} | {} |",
                    kind.name(),
                    per_s(median_of(samples, |s| Some(s.rate())).unwrap_or(f64::NAN)),
                    per_s(lo),
                    per_s(hi),
                    per_s(median_of(samples, |s| Some(s.produce_rate())).unwrap_or(f64::NAN)),
                    if kind.durable() {
                        opt(median_of(samples, Sample::syncs_per_s), per_s)
                    } else {
                        "-".into()
                    },
                    opt(median_of(samples, Sample::messages_per_sync), |v| format!(
                        "{v:.1}"
                    )),
                    opt(median_of(samples, Sample::bytes_per_message), |v| format!(
                        "{v:.0}"
                    )),
                );
            }
        }
        let _ = writeln!(
            out,
            "\nmsg/s: messages acked over the time from the first worker's start to the last ack (what the table's bars use); produced msg/s: messages over the time until the producers' last produce returned (where it is far above msg/s, the consumers are the bottleneck and drain a backlog after the producers stop).\n\nfsyncs: rebound's `journal_stats().syncs`; SQLite's counted by a VFS shim around its default VFS (every `xSync`). In SQLite every produce (`INSERT`), claim (`UPDATE ... RETURNING`) and ack (`DELETE`) is its own transaction: with `synchronous=FULL` each commit syncs the WAL once; with `NORMAL` only checkpoints sync (the WAL and the database file)."
        );
    }

    if !opens.is_empty() {
        let _ = writeln!(
            out,
            "\n#### Open time against journal size (`Buffered`, pending 8 B messages, median of {} opens)\n\n| pending | record bytes written | files on disk | filled in | `recovery().elapsed` | `open()` wall | records replayed |\n|---:|---:|---:|---:|---:|---:|---:|",
            args.open_runs
        );
        for o in &opens {
            let mut rec: Vec<f64> = o.samples.iter().map(|s| s.recovery.as_secs_f64()).collect();
            let mut wall: Vec<f64> = o.samples.iter().map(|s| s.wall.as_secs_f64()).collect();
            let _ = writeln!(
                out,
                "| {} | {:.1} MiB | {:.1} MiB | {:.2} s | {:.1} ms | {:.1} ms | {} |",
                o.messages,
                o.written as f64 / (1 << 20) as f64,
                o.disk_bytes as f64 / (1 << 20) as f64,
                o.fill.as_secs_f64(),
                median(&mut rec) * 1e3,
                median(&mut wall) * 1e3,
                o.samples.last().map_or(0, |s| s.records),
            );
        }
    }

    // ---- the bars of issue 15 ----
    let _ = writeln!(
        out,
        "\n#### Bars\n\n| bar | figure | verdict |\n|---|---|---|"
    );
    let mut bar = |what: &str, figure: String, met: Option<bool>| {
        let _ = writeln!(
            out,
            "| {what} | {figure} | {} |",
            met.map_or("(not a bar)", verdict)
        );
    };
    for (_, label) in PAYLOADS {
        let g = group_name("1p1c", label);
        let is_bar = label == "8B";
        let buffered = rate(&g, Kind::Buffered);
        if let (Some(b), Some(m)) = (buffered, rate(&g, Kind::Memory)) {
            bar(
                &format!("`Buffered` >= 0.2x in-memory, `{g}`"),
                format!("{} vs {} msg/s = {:.3}x", per_s(b), per_s(m), b / m),
                is_bar.then_some(b / m >= 0.2),
            );
        }
        if let (Some(b), Some(s)) = (buffered, rate(&g, Kind::SqliteNormal)) {
            bar(
                &format!("`Buffered` >= 20x SQLite NORMAL, `{g}`"),
                format!("{} vs {} msg/s = {:.1}x", per_s(b), per_s(s), b / s),
                is_bar.then_some(b / s >= 20.0),
            );
        }
    }
    for (_, label) in PAYLOADS {
        let g = group_name("16p2c", label);
        let samples = results.get(&g);
        let per_sync = |kind| {
            samples?
                .get(&kind)
                .and_then(|s| median_of(s, Sample::messages_per_sync))
        };
        for kind in [Kind::Fsync, Kind::FsyncBatched] {
            let (Some(f), Some(s)) = (rate(&g, kind), rate(&g, Kind::SqliteFull)) else {
                continue;
            };
            bar(
                &format!(
                    "{} >= 10x SQLite FULL, `{g}`, many records per fsync",
                    kind.name()
                ),
                format!(
                    "{} vs {} msg/s = {:.1}x; per fsync: {} vs {} messages, {} journal records vs {} SQLite transactions",
                    per_s(f),
                    per_s(s),
                    f / s,
                    opt(per_sync(kind), |v| format!("{v:.2}")),
                    opt(per_sync(Kind::SqliteFull), |v| format!("{v:.2}")),
                    // Three each per message: rebound journals a produce,
                    // a claim and an ack; SQLite commits an INSERT, an
                    // UPDATE and a DELETE.
                    opt(per_sync(kind), |v| format!("{:.1}", 3.0 * v)),
                    opt(per_sync(Kind::SqliteFull), |v| format!("{:.1}", 3.0 * v)),
                ),
                Some(f / s >= 10.0),
            );
        }
    }
    if let Some(o) = opens.iter().find(|o| o.messages == 1_000_000) {
        let mut rec: Vec<f64> = o.samples.iter().map(|s| s.recovery.as_secs_f64()).collect();
        let t = median(&mut rec);
        bar(
            "`open` of 1M pending 8 B messages < 2 s",
            format!(
                "{:.0} ms (`recovery().elapsed`, median of {})",
                t * 1e3,
                o.samples.len()
            ),
            Some(t < 2.0),
        );
    }

    println!("\n{out}");
    let data = common::data_dir();
    std::fs::write(data.join("durable.md"), &out).expect("write durable.md");
    let rows: Vec<_> = results
        .iter()
        .flat_map(|(group, kinds)| {
            kinds.iter().map(move |(kind, samples)| {
                json!({
                    "group": group,
                    "contender": kind.name(),
                    "runs": samples.iter().map(|s| json!({
                        "messages": s.messages,
                        "seconds": s.elapsed.as_secs_f64(),
                        "producing_seconds": s.producing.as_secs_f64(),
                        "syncs": s.syncs,
                        "bytes_written": s.bytes,
                    })).collect::<Vec<_>>(),
                })
            })
        })
        .collect();
    let open_rows: Vec<_> = opens
        .iter()
        .map(|o| {
            json!({
                "pending": o.messages,
                "bytes_written": o.written,
                "disk_bytes": o.disk_bytes,
                "fill_seconds": o.fill.as_secs_f64(),
                "opens": o.samples.iter().map(|s| json!({
                    "recovery_seconds": s.recovery.as_secs_f64(),
                    "open_seconds": s.wall.as_secs_f64(),
                    "records": s.records,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = json!({ "throughput": rows, "open": open_rows });
    std::fs::write(
        data.join("durable.json"),
        serde_json::to_string_pretty(&doc).expect("json"),
    )
    .expect("write durable.json");
    println!(
        "wrote {} and durable.json",
        data.join("durable.md").display()
    );
}
