//! The crash test: a child process works a journaled queue at random
//! (produce, produce with ids of their own, batches, delays, claims, acks,
//! rollbacks, defers, dead letters, redrives, extensions, expiries,
//! drains), telling this process each call that
//! returned `Ok`; it is killed with `SIGKILL` at a random moment, and this
//! process opens the journal and checks what came back against what the
//! child was told:
//!
//! 1. every produce that returned `Ok` is there, byte-exact, unless its
//!    message was settled; each producer's never-delivered messages come
//!    back in the order it produced them;
//! 2. an `ack` or `dead_letter` that returned `Ok` is final;
//! 3. a message held at the kill comes back at once with its attempt count
//!    carried on, never reset; a deferred one at the attempt it was
//!    deferred at; a redriven one with a fresh count;
//! 4. a delayed message is not delivered before its due time;
//! 5. drained dead letters do not come back (unless redriven); the others do;
//! 6. the id of every message that comes back is still taken: a
//!    `produce_with_id` of it is a duplicate;
//! 7. ordered groups come back whole: no two messages of a group are
//!    claimable at once, and a group's messages come back in its order,
//!    none of them before a message of the group the child saw acked
//!    (every other seed holds groups on dead letters and releases some;
//!    the checker releases the rest).
//!
//! `cargo test --test crash` runs 10 kills; the long run is
//! `cargo test --release --test crash -- --ignored` (200 kills).
#![cfg(all(unix, feature = "journal"))]

use rebound::{Backoff, Queue};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MAX_ATTEMPTS: u32 = 4;
const PRODUCERS: u64 = 2;
const CONSUMERS: u64 = 2;
/// Each producer's ordered groups: `g{producer}-{0..}`.
const GROUPS_PER_PRODUCER: usize = 6;

/// Opens the journal in `dir`; every other seed holds groups on dead
/// letters (`hold_groups`), so that holds and releases are journaled too.
fn open(dir: &Path, seed: u64) -> Queue<Vec<u8>> {
    Queue::builder()
        .hold_groups(seed.is_multiple_of(2))
        .lease(Duration::from_millis(100))
        .backoff(Backoff::fixed(Duration::from_millis(5)))
        .max_attempts(MAX_ATTEMPTS)
        .journal(dir)
        .segment_size(256 << 10)
        .open()
        .unwrap()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The child's report line writer: one `write` per line, so a line is
/// either whole in the pipe or absent when the kill comes.
#[derive(Clone)]
struct Reporter(Arc<Mutex<std::io::Stdout>>);

impl Reporter {
    fn say(&self, line: String) {
        let out = self.0.lock().unwrap();
        let mut out = out.lock();
        out.write_all(format!("\n@{line}\n").as_bytes()).unwrap();
        out.flush().unwrap();
    }
}

/// The child: works the queue until it is killed.
fn child(dir: &Path, seed: u64) -> ! {
    let q = open(dir, seed);
    let say = Reporter(Arc::new(Mutex::new(std::io::stdout())));
    say.say("open".into());
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let (q, say) = (q.clone(), say.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed ^ ((p + 1) * 7919));
            // This producer's message count: its produce order.
            let mut n = 0u64;
            // Its groups (`g{p}-{j}`) and how many messages each got.
            let mut in_group = [0u64; GROUPS_PER_PRODUCER];
            loop {
                // Each payload names its producer and its produce order.
                let mut payload = |rng: &mut fastrand::Rng| {
                    let mut v = format!("p{p}-{n}-").into_bytes();
                    v.extend((0..rng.usize(0..40)).map(|_| rng.u8(..)));
                    n += 1;
                    (n - 1, v)
                };
                match rng.u8(0..13) {
                    0..=3 => {
                        let (k, v) = payload(&mut rng);
                        let id = q.produce(v.clone()).unwrap();
                        say.say(format!("P {id} {p} {k} 0 {}", hex(&v)));
                    }
                    10..=12 => {
                        // Into one of this producer's groups, alone or as a
                        // batch: reported with the group and its order.
                        let j = rng.usize(0..in_group.len());
                        let group = format!("g{p}-{j}");
                        let vs: Vec<_> = (0..rng.u64(1..4)).map(|_| payload(&mut rng)).collect();
                        let ids = if vs.len() == 1 {
                            vec![q.produce_in_group(&group, vs[0].1.clone()).unwrap()]
                        } else {
                            q.produce_batch_in_group(&group, vs.iter().map(|(_, v)| v.clone()))
                                .unwrap()
                        };
                        for (id, (k, v)) in ids.iter().zip(&vs) {
                            let at = in_group[j];
                            in_group[j] += 1;
                            say.say(format!("P {id} {p} {k} 0 {} {group} {at}", hex(v)));
                        }
                    }
                    4..=5 => {
                        let (k, v) = payload(&mut rng);
                        let own = rebound::MessageId::from_key(format!("{seed}-p{p}-{k}"));
                        let id = q.produce_with_id(own, v.clone()).unwrap();
                        say.say(format!("P {id} {p} {k} 0 {}", hex(&v)));
                    }
                    6..=7 => {
                        let vs: Vec<_> = (0..rng.u64(1..5)).map(|_| payload(&mut rng)).collect();
                        let ids = q.produce_batch(vs.iter().map(|(_, v)| v.clone())).unwrap();
                        for (id, (k, v)) in ids.iter().zip(&vs) {
                            say.say(format!("P {id} {p} {k} 0 {}", hex(v)));
                        }
                    }
                    _ => {
                        let (k, v) = payload(&mut rng);
                        let delay = Duration::from_millis(rng.u64(1..300));
                        let due = wall_ms() + delay.as_millis() as u64;
                        let id = q.produce_after(v.clone(), delay).unwrap();
                        say.say(format!("P {id} {p} {k} {due} {}", hex(&v)));
                    }
                }
                if rng.u8(0..4) == 0 {
                    std::thread::sleep(Duration::from_micros(rng.u64(0..500)));
                }
            }
        }));
    }
    for c in 0..CONSUMERS {
        let (q, say) = (q.clone(), say.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed ^ ((c + 100) * 104_729));
            loop {
                let Ok(d) = q.consume_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let id = d.id();
                say.say(format!("C {id} {}", d.attempt()));
                match rng.u8(0..20) {
                    0..=9 => {
                        say.say(format!("a {id}"));
                        if d.ack().is_ok() {
                            say.say(format!("A {id}"));
                        }
                    }
                    10..=11 => {
                        say.say(format!("d {id}"));
                        if d.dead_letter().is_ok() {
                            say.say(format!("D {id}"));
                        }
                    }
                    12 => {
                        let _ = d.rollback();
                    }
                    13 => {
                        let attempt = d.attempt();
                        say.say(format!("f {id} {attempt}"));
                        let _ = d.defer(Duration::from_millis(rng.u64(0..20)));
                    }
                    14 => {
                        let _ = d.rollback_after(Duration::from_millis(rng.u64(0..50)));
                    }
                    15 => {
                        // Outlive the lease: the message is redelivered.
                        std::thread::sleep(Duration::from_millis(120));
                        drop(d);
                    }
                    16 => {
                        let _ = d.extend_lease(Duration::from_millis(200));
                        std::thread::sleep(Duration::from_millis(rng.u64(0..5)));
                        say.say(format!("a {id}"));
                        if d.ack().is_ok() {
                            say.say(format!("A {id}"));
                        }
                    }
                    17 => {
                        say.say("x".into());
                        let drained = q.drain_dead_letters();
                        for letter in &drained {
                            say.say(format!("X {}", letter.id()));
                        }
                        say.say("x-done".into());
                        for letter in drained {
                            if rng.bool() {
                                let id = letter.id();
                                say.say(format!("r {id}"));
                                if q.redrive(letter).is_ok() {
                                    say.say(format!("R {id}"));
                                }
                            } else if let Some(group) = letter.group() {
                                // Held (with `hold_groups`) until this, or
                                // until the checker releases it.
                                if rng.bool() {
                                    q.release_group(group);
                                }
                            }
                        }
                        drop(d);
                    }
                    _ => {
                        // Held for a while, then rolled back by the drop.
                        std::thread::sleep(Duration::from_millis(rng.u64(0..10)));
                        drop(d);
                    }
                }
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    unreachable!("the child runs until it is killed")
}

#[derive(Default, Debug)]
struct Message {
    /// Whether the child reported its produce (a consumer may claim it
    /// first, and the kill may cut the report).
    reported: bool,
    producer: u64,
    k: u64,
    due_ms: u64,
    payload: Vec<u8>,
    /// Highest attempt the child reported claiming.
    claimed: u32,
    /// Whether the child was about to settle it for good (ack or dead
    /// letter): it may be settled without a report of it.
    settling: bool,
    acked: bool,
    dead: bool,
    drained: bool,
    /// Claims reported per attempt, and defers begun per attempt: while
    /// every claim of the highest attempt may have been deferred, the
    /// message may come back at that attempt.
    claims_at: HashMap<u32, u32>,
    defers_at: HashMap<u32, u32>,
    /// A redrive began (`r`) or returned (`R`): a new life, counted afresh.
    redriving: bool,
    redriven: bool,
    /// Its ordered group and its place in the group's order.
    group: Option<(String, u64)>,
}

/// Runs one child in `dir` for a random while, kills it, and checks the
/// journal against its reports.
fn one_kill(dir: &Path, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REBOUND_CRASH_DIR", dir)
        .env("REBOUND_CRASH_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix('@').map(str::to_owned))
            .collect::<Vec<_>>()
    });
    // Sometimes during the open, mostly while it works.
    let wait = if rng.u8(0..8) == 0 {
        rng.u64(0..20)
    } else {
        rng.u64(20..250)
    };
    std::thread::sleep(Duration::from_millis(wait));
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = reader.join().unwrap();

    let mut messages: HashMap<String, Message> = HashMap::new();
    // Messages each producer reported.
    let mut produced: HashMap<u64, u64> = HashMap::new();
    let mut draining = false;
    for line in &lines {
        let mut f = line.split(' ');
        let kind = f.next().unwrap();
        let id = f.next().unwrap_or_default().to_owned();
        match kind {
            "P" => {
                let producer = f.next().unwrap().parse().unwrap();
                let k = f.next().unwrap().parse().unwrap();
                let due_ms = f.next().unwrap().parse().unwrap();
                let h = f.next().unwrap();
                let payload = (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect();
                let group = f
                    .next()
                    .map(|g| (g.to_owned(), f.next().unwrap().parse().unwrap()));
                let m = messages.entry(id).or_default();
                (m.reported, m.producer, m.k, m.due_ms, m.payload, m.group) =
                    (true, producer, k, due_ms, payload, group);
                let count = produced.entry(producer).or_insert(0);
                *count = (*count).max(k + 1);
            }
            "C" => {
                let m = messages.entry(id).or_default();
                let attempt = f.next().unwrap().parse().unwrap();
                m.claimed = m.claimed.max(attempt);
                *m.claims_at.entry(attempt).or_default() += 1;
            }
            "f" => {
                let m = messages.entry(id).or_default();
                *m.defers_at
                    .entry(f.next().unwrap().parse().unwrap())
                    .or_default() += 1;
            }
            "r" => {
                let m = messages.entry(id).or_default();
                // A new life: its attempts start again at 1. Only at `r`:
                // the new life may be claimed, even acked, and reported
                // before the redrive's `R`.
                (m.claimed, m.settling, m.acked, m.dead, m.drained) =
                    (0, false, false, false, false);
                m.claims_at.clear();
                m.defers_at.clear();
                m.redriving = true;
            }
            "R" => messages.entry(id).or_default().redriven = true,
            "a" | "d" => messages.entry(id).or_default().settling = true,
            "A" => messages.entry(id).or_default().acked = true,
            "D" => messages.entry(id).or_default().dead = true,
            "X" => {
                if let Some(m) = messages.get_mut(&id) {
                    m.drained = true;
                }
            }
            "x" => draining = true,
            "x-done" => draining = false,
            _ => {}
        }
    }

    // A message whose produce returned but whose report the kill cut off
    // (or came after a claim's) is one of the last few of its producer.
    let unreported_ok = |payload: &[u8]| {
        let text = String::from_utf8_lossy(payload);
        let mut parts = text.splitn(3, '-');
        let p: Option<u64> = parts.next().and_then(|p| p.strip_prefix('p')?.parse().ok());
        let n: Option<u64> = parts.next().and_then(|n| n.parse().ok());
        matches!((p, n), (Some(p), Some(n)) if n + 5 >= produced.get(&p).copied().unwrap_or(0))
    };
    let q = open(dir, seed);
    let recovery = q.recovery().unwrap();
    let context = format!("seed {seed}, {} reports, {recovery:?}", lines.len());
    let mut seen: HashSet<String> = HashSet::new();
    for letter in q.drain_dead_letters() {
        let id = letter.id().to_string();
        let none = Message::default();
        let m = messages.get(&id).unwrap_or(&none);
        assert!(
            m.reported || unreported_ok(letter.payload()),
            "unknown dead letter {id}; {context}"
        );
        assert!(
            !m.acked,
            "acked message {id} came back as a dead letter; {context}"
        );
        assert!(!m.drained, "drained dead letter {id} came back; {context}");
        if m.reported {
            assert_eq!(letter.payload(), &m.payload, "{context}");
        }
        assert!(
            letter.attempts() >= m.claimed,
            "{id}: {} < {}; {context}",
            letter.attempts(),
            m.claimed
        );
        seen.insert(id);
    }
    // Groups held by their dead letters (drained here, or by the child) go
    // on: every group the child could have made.
    for p in 0..PRODUCERS {
        for j in 0..GROUPS_PER_PRODUCER {
            q.release_group(format!("g{p}-{j}"));
        }
    }
    // Never-delivered, due messages of each producer, in claim order.
    let mut order: HashMap<u64, u64> = HashMap::new();
    // Per group: the last place delivered since the restart, and the
    // highest place the child saw acked (everything before it was final).
    let mut group_order: HashMap<String, u64> = HashMap::new();
    let mut group_acked: HashMap<String, u64> = HashMap::new();
    for m in messages.values().filter(|m| m.acked && !m.redriving) {
        if let Some((g, at)) = &m.group {
            let top = group_acked.entry(g.clone()).or_insert(*at);
            *top = (*top).max(*at);
        }
    }
    let quiet = Duration::from_millis(600);
    // Everything claimable at once (up to 64), checked, then acked.
    while let Ok(first) = q.consume_timeout(quiet) {
        let mut held = vec![first];
        while held.len() < 64 {
            match q.try_consume() {
                Ok(d) => held.push(d),
                Err(_) => break,
            }
        }
        let mut groups_held = HashSet::new();
        for d in &held {
            if let Some(g) = d.group() {
                assert!(
                    groups_held.insert(g),
                    "two messages of group {g:?} claimable at once; {context}"
                );
            }
        }
        for d in held {
            let id = d.id().to_string();
            let none = Message::default();
            let m = messages.get(&id).unwrap_or(&none);
            assert!(
                m.reported || unreported_ok(&d),
                "unknown message {id} ({m:?}, payload {:?}, produced {produced:?}); {context}",
                String::from_utf8_lossy(&d)
            );
            assert!(!m.acked, "acked message {id} came back; {context}");
            assert!(!m.dead, "dead-lettered message {id} came back; {context}");
            if m.reported {
                assert_eq!(&*d, &m.payload, "payload of {id}; {context}");
            }
            let all_deferred =
                m.claimed > 0 && m.claims_at.get(&m.claimed) <= m.defers_at.get(&m.claimed);
            assert!(
                d.attempt() > m.claimed || (all_deferred && d.attempt() == m.claimed),
                "{id} came back at attempt {} after a claim of attempt {} ({m:?}); {context}",
                d.attempt(),
                m.claimed
            );
            assert!(
                q.produce_with_id(d.id(), Vec::new())
                    .unwrap_err()
                    .is_duplicate(),
                "the id of {id}, held, was free after the restart; {context}"
            );
            assert!(
                wall_ms() >= m.due_ms,
                "{id} delivered before it was due; {context}"
            );
            if let (Some((g, at)), false) = (&m.group, m.redriving) {
                if let Some(&acked) = group_acked.get(g) {
                    assert!(
                        *at > acked,
                        "{id}, place {at} of {g}, came back after place {acked} was acked; {context}"
                    );
                }
                if let Some(&last) = group_order.get(g) {
                    assert!(
                        *at > last,
                        "group {g} order: place {at} after {last}; {context}"
                    );
                }
                group_order.insert(g.clone(), *at);
            }
            if m.reported
                && d.attempt() == 1
                && m.due_ms == 0
                && m.claimed == 0
                && !m.redriving
                && m.group.is_none()
            {
                let last = order.entry(m.producer).or_insert(0);
                assert!(
                    m.k >= *last,
                    "producer {} order: {} after {}; {context}",
                    m.producer,
                    m.k,
                    last
                );
                *last = m.k;
            }
            assert!(
                seen.insert(id),
                "delivered twice after the restart; {context}"
            );
            d.ack().unwrap();
        }
    }
    for (id, m) in &messages {
        if seen.contains(id) || m.acked || m.drained || !m.reported {
            continue;
        }
        // Absent: only if a settle may have happened unreported, or it may
        // have been drained by a drain the kill cut short.
        let maybe_drained = draining && (m.claimed > 0);
        // A redrive the kill cut short: the letter was only in memory.
        let maybe_not_redriven = m.redriving && !m.redriven;
        assert!(
            m.settling || maybe_drained || maybe_not_redriven,
            "message {id} was lost: {m:?}; {context}"
        );
    }
    assert!(q.try_consume().is_err());
    drop(q);
    // All of it was acked or drained: the next open finds nothing, and no
    // group is left held.
    let q = open(dir, seed);
    let s = q.stats();
    assert_eq!((s.groups, s.grouped_waiting), (0, 0), "{s:?}; {context}");
    let r = q.recovery().unwrap();
    let left: Vec<String> = std::iter::from_fn(|| q.try_consume().ok())
        .map(|d| {
            format!(
                "{} {} {:?}",
                d.id(),
                d.attempt(),
                String::from_utf8_lossy(&d)
            )
        })
        .collect();
    assert_eq!(
        (r.pending, r.delayed, r.dead_letters, r.in_flight_at_crash),
        (0, 0, 0, 0),
        "left after everything was settled: {left:?}; {r:?}; {context}"
    );
}

/// The child's entry point: does nothing unless run by `one_kill`.
#[test]
fn child_process() {
    if let Some(dir) = std::env::var_os("REBOUND_CRASH_DIR") {
        let seed = std::env::var("REBOUND_CRASH_SEED")
            .unwrap()
            .parse()
            .unwrap();
        child(Path::new(&dir), seed);
    }
}

fn kills(n: u32) {
    let base = std::env::var("REBOUND_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let dir = TempDir::new();
    let started = Instant::now();
    for i in 0..n {
        one_kill(&dir.0, base.wrapping_add(u64::from(i)));
    }
    eprintln!("{n} kills from seed {base} in {:?}", started.elapsed());
}

#[test]
fn ten_kills_lose_nothing() {
    if std::env::var_os("REBOUND_CRASH_DIR").is_none() {
        kills(10);
    }
}

#[test]
#[ignore = "long: 200 kills, about three minutes"]
fn two_hundred_kills_lose_nothing() {
    if std::env::var_os("REBOUND_CRASH_DIR").is_none() {
        kills(200);
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        TempDir(std::env::temp_dir().join(format!(
            "rebound-crash-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        )))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
