//! Ordered groups: one message of a group at a time, in produce order,
//! across rollbacks, defers, expiries, dead letters and restarts.

use rebound::{Backoff, GroupKey, Queue, TryConsumeError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn queue<T: Send + Sync + 'static>() -> Queue<T> {
    Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .build()
}

fn none_ready<T: Send + Sync + 'static>(q: &Queue<T>) -> bool {
    matches!(q.try_consume(), Err(TryConsumeError::Empty))
}

#[test]
fn a_groups_messages_are_delivered_one_at_a_time_in_produce_order() {
    let q = queue();
    for i in 0..5 {
        q.produce_in_group("account-1", i).unwrap();
    }
    for i in 0..5 {
        let d = q.consume().unwrap();
        assert_eq!((*d, d.attempt()), (i, 1));
        assert_eq!(d.group(), Some(GroupKey::from("account-1")));
        assert!(
            none_ready(&q),
            "a second message of the group while {i} is held"
        );
        d.ack().unwrap();
    }
    assert!(none_ready(&q));
    let s = q.stats();
    assert_eq!((s.groups, s.grouped_waiting, s.acked), (0, 0, 5));
    assert_eq!(s.oldest_group_head, None);
}

#[test]
fn a_rolled_back_deferred_or_expired_head_comes_back_before_the_next() {
    let q: Queue<&str> = Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .lease(Duration::from_millis(30))
        .build();
    q.produce_in_group(7, "debit").unwrap();
    q.produce_in_group(7, "credit").unwrap();

    q.consume().unwrap().rollback().unwrap();
    let d = q.consume().unwrap();
    assert_eq!((*d, d.attempt()), ("debit", 2));
    d.defer(Duration::from_millis(5)).unwrap();
    assert!(none_ready(&q), "the credit overtook a deferred debit");
    let d = q.consume().unwrap();
    assert_eq!((*d, d.attempt()), ("debit", 2));
    // Its lease runs out while it is held: it comes back, not the credit.
    let started = Instant::now();
    let again = q.consume().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(20));
    assert_eq!((*again, again.attempt()), ("debit", 3));
    assert!(d.ack().is_err(), "the expired holder's ack was taken");
    assert!(none_ready(&q));
    again.ack().unwrap();
    let credit = q.consume().unwrap();
    assert_eq!((*credit, credit.attempt()), ("credit", 1));
    credit.ack().unwrap();
}

#[test]
fn different_groups_and_ungrouped_messages_are_not_held_back() {
    let q = queue();
    q.produce_in_group(1, "1a").unwrap();
    q.produce_in_group(1, "1b").unwrap();
    q.produce_in_group(2, "2a").unwrap();
    q.produce("free").unwrap();
    q.produce_in_group(2, "2b").unwrap();
    let held: Vec<_> = std::iter::from_fn(|| q.try_consume().ok()).collect();
    let got: Vec<&str> = held.iter().map(|d| **d).collect();
    assert_eq!(got, ["1a", "2a", "free"]);
    assert_eq!(q.stats().grouped_waiting, 2);
    for d in held {
        d.ack().unwrap();
    }
    let next: Vec<&str> = std::iter::from_fn(|| q.try_consume().ok())
        .map(|d| {
            let v = *d;
            d.ack().unwrap();
            v
        })
        .collect();
    assert_eq!(next, ["1b", "2b"]);
}

#[test]
fn a_dead_letter_releases_its_group_by_default_and_redrives_to_its_end() {
    let q: Queue<&str> = Queue::builder().max_attempts(2).build();
    q.produce_in_group("g", "poison").unwrap();
    q.produce_in_group("g", "next").unwrap();
    q.produce_in_group("g", "last").unwrap();
    q.consume().unwrap().dead_letter().unwrap();
    let d = q.consume().unwrap();
    assert_eq!(*d, "next");
    let letter = q.drain_dead_letters().pop().unwrap();
    assert_eq!(letter.group(), Some(GroupKey::from("g")));
    // Released: a redrive goes behind what is already in the group.
    let id = letter.id();
    assert_eq!(q.redrive(letter).unwrap(), id);
    d.ack().unwrap();
    assert_eq!(*q.consume().unwrap(), "last");
    // (the "last" delivery above was dropped: rolled back, it comes first)
    let last = q.consume().unwrap();
    assert_eq!((*last, last.attempt()), ("last", 2));
    last.ack().unwrap();
    let back = q.consume().unwrap();
    assert_eq!((*back, back.id(), back.attempt()), ("poison", id, 1));
    back.ack().unwrap();
    assert_eq!(q.stats().redriven, 1);
}

#[test]
fn a_held_group_waits_for_its_redriven_letter_or_a_release() {
    let q: Queue<&str> = Queue::builder().hold_groups(true).max_attempts(1).build();
    q.produce_in_group(9, "paid").unwrap();
    q.produce_in_group(9, "shipped").unwrap();
    q.consume().unwrap().rollback().unwrap(); // its last attempt: dead
    assert!(none_ready(&q), "a held group delivered its next message");
    let s = q.stats();
    assert_eq!((s.groups, s.groups_held, s.grouped_waiting), (1, 1, 1));
    assert!(!q.release_group(8), "a group that is not held was released");

    // Redriven: the letter is the group's head again.
    let letter = q.drain_dead_letters().pop().unwrap();
    assert!(none_ready(&q), "draining the letter released the group");
    q.redrive(letter).unwrap();
    let d = q.consume().unwrap();
    assert_eq!((*d, d.attempt()), ("paid", 1));
    assert!(none_ready(&q));
    d.dead_letter().unwrap();
    assert!(none_ready(&q));

    // Released by hand: the next message goes; a later redrive goes last.
    assert!(q.release_group(9));
    assert!(!q.release_group(9));
    let d = q.consume().unwrap();
    assert_eq!(*d, "shipped");
    q.redrive(q.drain_dead_letters().pop().unwrap()).unwrap();
    assert!(none_ready(&q), "the redrive overtook the group's head");
    d.ack().unwrap();
    let d = q.consume().unwrap();
    assert_eq!(*d, "paid");
    d.ack().unwrap();
    assert_eq!(q.stats().groups, 0);
}

#[test]
fn a_stale_holder_of_an_expired_last_attempt_keeps_the_next_message_back() {
    let q: Queue<&str> = Queue::builder()
        .max_attempts(1)
        .lease(Duration::from_millis(20))
        .build();
    q.produce_in_group(3, "slow").unwrap();
    q.produce_in_group(3, "next").unwrap();
    let stale = q.consume().unwrap();
    // Its lease ends; the message is dead, but its handler still runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    while q.stats().dead_lettered == 0 {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        none_ready(&q),
        "the next message started beside a running handler"
    );
    drop(stale);
    let d = q.consume_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(*d, "next");
    d.ack().unwrap();
    assert_eq!(q.drain_dead_letters().len(), 1);
}

#[test]
fn stats_count_waiting_messages_apart_from_ready_and_in_flight() {
    let q = queue();
    q.produce_batch_in_group(1, [1, 2, 3]).unwrap();
    q.produce_in_group(2, 4).unwrap();
    q.produce(5).unwrap();
    let held = q.consume().unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let s = q.stats();
    assert_eq!(
        (
            s.produced,
            s.ready,
            s.in_flight,
            s.grouped_waiting,
            s.groups
        ),
        (5, 2, 1, 2, 2)
    );
    assert!(s.oldest_group_head.unwrap() >= Duration::from_millis(5));
    assert_eq!(
        s.produced,
        s.acked + s.dead_lettered + s.ready + s.delayed + s.in_flight + s.grouped_waiting
    );
    held.ack().unwrap();
}

#[test]
fn a_closed_queue_still_delivers_every_waiting_message_of_a_group() {
    let q = queue();
    q.produce_batch_in_group("g", 0..10).unwrap();
    q.close();
    assert!(q.produce_in_group("g", 10).unwrap_err().is_closed());
    let mut got = Vec::new();
    while let Ok(d) = q.consume() {
        got.push(*d);
        d.ack().unwrap();
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

#[test]
fn the_processing_runtime_works_with_groups_unchanged() {
    let q = queue();
    let log = Arc::new(Mutex::new(HashMap::<u64, Vec<u32>>::new()));
    for i in 0..200u32 {
        q.produce_in_group(u64::from(i % 10), i).unwrap();
    }
    q.close();
    let seen = Arc::clone(&log);
    let fail_once = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let report = q
        .process(
            rayon::ThreadPoolBuilder::new()
                .num_threads(4)
                .build()
                .unwrap(),
            move |d: &rebound::Delivery<u32>| {
                // Every fifth message fails once, then succeeds.
                if (**d).is_multiple_of(5) && fail_once.lock().unwrap().insert(**d) {
                    return rebound::Outcome::Retry;
                }
                let key = d.group().unwrap().as_u64();
                seen.lock().unwrap().entry(key).or_default().push(**d);
                rebound::Outcome::Ack
            },
        )
        .join();
    assert_eq!(report.acked, 200);
    for (key, got) in log.lock().unwrap().iter() {
        let want: Vec<u32> = (0..200).filter(|i| u64::from(*i) % 10 == *key).collect();
        assert_eq!(got, &want, "group {key}");
    }
}

/// Counts its drops.
struct Counted(Arc<AtomicU64>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_head_settled_after_the_queue_is_gone_publishes_nothing_and_every_payload_drops() {
    let drops = Arc::new(AtomicU64::new(0));
    let q: Queue<Counted> = Queue::new();
    for _ in 0..3 {
        q.produce_in_group(1, Counted(Arc::clone(&drops))).unwrap();
    }
    q.produce_in_group(2, Counted(Arc::clone(&drops))).unwrap();
    let head = q.consume().unwrap();
    let other = q.consume().unwrap();
    drop(q); // the last handle: the waiting messages go with it
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    head.ack().unwrap(); // its group is gone: nothing to publish
    other.dead_letter().unwrap();
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

/// What the big test's consumers saw of one group.
#[derive(Default)]
struct Seen {
    /// The message of this group held now (`index`, `attempt`), if any.
    held: Option<(u64, u32)>,
    /// Highest index claimed so far.
    highest: Option<u64>,
    acked: Vec<u64>,
}

/// Many producers and consumers, thousands of groups, random rollbacks,
/// defers, expiries, dead letters, redrives and releases: per group, first
/// claims follow produce order, a message never comes back after a later
/// one was claimed, no two messages of a group are held at once, and every
/// message ends acked or dead.
fn hammer(hold: bool) {
    const GROUPS: u64 = 2_000;
    const PER_GROUP: u64 = 8;
    const PRODUCERS: u64 = 2;
    const CONSUMERS: u64 = 4;
    let q: Queue<(u64, u64)> = Queue::builder()
        .backoff(Backoff::fixed(Duration::from_micros(200)))
        .lease(Duration::from_millis(40))
        .max_attempts(4)
        .hold_groups(hold)
        .build();
    let seen: Arc<Vec<Mutex<Seen>>> =
        Arc::new((0..GROUPS).map(|_| Mutex::new(Seen::default())).collect());
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let expiries = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let q = q.clone();
        threads.push(std::thread::spawn(move || {
            // Producer `p` owns the groups `g % PRODUCERS == p`, so each
            // group's produce order is one thread's order.
            let groups: Vec<u64> = (0..GROUPS).filter(|g| g % PRODUCERS == p).collect();
            for i in (0..PER_GROUP).step_by(2) {
                for &g in &groups {
                    if g.is_multiple_of(3) {
                        q.produce_batch_in_group(g, [(g, i), (g, i + 1)]).unwrap();
                    } else {
                        q.produce_in_group(g, (g, i)).unwrap();
                        q.produce_in_group(g, (g, i + 1)).unwrap();
                    }
                }
            }
        }));
    }
    for c in 0..CONSUMERS {
        let (q, seen, failures, done, expiries) = (
            q.clone(),
            Arc::clone(&seen),
            Arc::clone(&failures),
            Arc::clone(&done),
            Arc::clone(&expiries),
        );
        threads.push(std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(c);
            while !done.load(Ordering::SeqCst) {
                if c == 0 && rng.u8(0..50) == 0 {
                    // A held group's letter goes back to its head, or the
                    // group moves on without it. (A released group's
                    // redriven letter would go to the group's end, after
                    // later messages: not what this test checks.)
                    for letter in q.drain_dead_letters() {
                        let g = letter.payload().0;
                        if hold && rng.bool() {
                            q.redrive(letter).unwrap();
                        } else if hold {
                            assert!(q.release_group(g));
                        }
                    }
                }
                let Ok(d) = q.consume_timeout(Duration::from_millis(5)) else {
                    continue;
                };
                let (g, i) = *d;
                let attempt = d.attempt();
                {
                    let mut s = seen[g as usize].lock().unwrap();
                    if let Some((other, _)) = s.held.filter(|&(other, _)| other != i) {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("group {g}: {i} claimed while {other} is held"));
                    }
                    let ok = match s.highest {
                        None => i == 0,
                        Some(h) => i == h || i == h + 1,
                    };
                    if !ok {
                        failures.lock().unwrap().push(format!(
                            "group {g}: {i} claimed after {:?} (acked {:?})",
                            s.highest, s.acked
                        ));
                    }
                    s.highest = Some(s.highest.map_or(i, |h| h.max(i)));
                    s.held = Some((i, attempt));
                }
                let release = |s: &mut Seen| {
                    if s.held == Some((i, attempt)) {
                        s.held = None;
                    }
                };
                match rng.u8(0..100) {
                    0..=69 => {
                        let mut s = seen[g as usize].lock().unwrap();
                        release(&mut s);
                        // Under the lock: the next claim of the group
                        // cannot be recorded before this ack is.
                        if d.ack().is_ok() {
                            s.acked.push(i);
                        }
                    }
                    70..=79 => {
                        release(&mut seen[g as usize].lock().unwrap());
                        let _ = d.rollback();
                    }
                    80..=89 => {
                        release(&mut seen[g as usize].lock().unwrap());
                        let _ = d.defer(Duration::from_micros(rng.u64(0..500)));
                    }
                    90..=93 => {
                        release(&mut seen[g as usize].lock().unwrap());
                        let _ = d.dead_letter();
                    }
                    94 if expiries.load(Ordering::Relaxed) < 40 => {
                        // Outlive the lease: the head comes back (or dies),
                        // and nothing else of its group starts meanwhile.
                        expiries.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(60));
                        release(&mut seen[g as usize].lock().unwrap());
                        drop(d);
                    }
                    _ => {
                        release(&mut seen[g as usize].lock().unwrap());
                        drop(d); // a rollback
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = q.stats();
        assert!(
            failures.lock().unwrap().is_empty(),
            "{:?}",
            &failures.lock().unwrap()[..]
        );
        if s.produced - s.redriven == GROUPS * PER_GROUP
            && s.acked + s.dead_lettered == s.produced
            && s.groups == 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "not done: {s:?}");
        // A consumer that panicked (producers finish on their own).
        assert!(
            !threads[PRODUCERS as usize..]
                .iter()
                .any(|t| t.is_finished()),
            "a consumer died; {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    done.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(failures.lock().unwrap().is_empty());
    // Every message was claimed, in order; acks follow produce order.
    for (g, s) in seen.iter().enumerate() {
        let s = s.lock().unwrap();
        assert_eq!(s.highest, Some(PER_GROUP - 1), "group {g}");
        assert!(
            s.acked.windows(2).all(|w| w[0] < w[1]),
            "group {g}: {:?}",
            s.acked
        );
    }
    assert!(expiries.load(Ordering::Relaxed) > 0);
}

#[test]
fn many_producers_and_consumers_keep_every_groups_order() {
    hammer(false);
}

#[test]
fn held_groups_keep_their_order_through_redrives_and_releases() {
    hammer(true);
}

/// Journaled groups: what comes back after a `SIGKILL`.
#[cfg(all(feature = "journal", unix))]
mod journaled {
    use super::*;
    use std::path::{Path, PathBuf};

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            TempDir(std::env::temp_dir().join(format!(
                "rebound-groups-{name}-{}-{}",
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

    fn open(dir: &Path, hold: bool) -> Queue<String> {
        Queue::builder()
            .backoff(Backoff::fixed(Duration::ZERO))
            .max_attempts(5)
            .hold_groups(hold)
            .journal(dir)
            .open()
            .unwrap()
    }

    /// Runs test `test` again as a child process in `dir`, which works and
    /// then kills itself.
    fn child(test: &str, dir: &Path) {
        use std::os::unix::process::ExitStatusExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env("REBOUND_GROUPS_DIR", dir)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "the child did not get to its crash: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn child_dir() -> Option<PathBuf> {
        std::env::var_os("REBOUND_GROUPS_DIR").map(PathBuf::from)
    }

    fn die() -> ! {
        // SAFETY: `kill` with this process's own id and a valid signal.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        unreachable!("SIGKILL returned")
    }

    /// Takes every message as it becomes claimable, one at a time, acking
    /// each: `(value, attempt)` in delivery order.
    fn settle_all(q: &Queue<String>) -> Vec<(String, u32)> {
        let mut got = Vec::new();
        while let Ok(d) = q.consume_timeout(Duration::from_millis(300)) {
            got.push(((*d).clone(), d.attempt()));
            d.ack().unwrap();
        }
        got
    }

    fn of(got: &[(String, u32)], group: &str) -> Vec<(String, u32)> {
        got.iter()
            .filter(|(v, _)| v.starts_with(group))
            .cloned()
            .collect()
    }

    #[test]
    fn groups_come_back_after_a_crash_in_order_with_their_heads_attempts() {
        if let Some(dir) = child_dir() {
            let q = open(&dir, false);
            for i in 0..5 {
                q.produce_in_group("a", format!("a{i}")).unwrap();
            }
            q.produce_batch_in_group("b", (0..3).map(|i| format!("b{i}")))
                .unwrap();
            q.produce("free".to_string()).unwrap();
            // a0: rolled back once, then held at the crash; b0 acked, b1
            // dead, b2 and "free" held at the crash.
            let mut held = Vec::new();
            while let Ok(d) = q.consume_timeout(Duration::from_millis(200)) {
                match d.as_str() {
                    "a0" if d.attempt() == 1 => d.rollback().unwrap(),
                    "b0" => d.ack().unwrap(),
                    "b1" => d.dead_letter().unwrap(),
                    _ => held.push(d),
                }
            }
            let s = q.stats();
            assert_eq!((s.groups, s.grouped_waiting, held.len()), (2, 4, 3));
            die();
        }
        let dir = TempDir::new("crash");
        child(
            "journaled::groups_come_back_after_a_crash_in_order_with_their_heads_attempts",
            &dir.0,
        );
        let q = open(&dir.0, false);
        let r = q.recovery().unwrap();
        assert_eq!(r.dead_letters, 1);
        assert_eq!((r.in_flight_at_crash, r.pending), (3, 7));
        let s = q.stats();
        assert_eq!((s.groups, s.grouped_waiting), (2, 4), "{s:?}");
        let dead = q.drain_dead_letters();
        assert_eq!(
            (dead[0].payload().as_str(), dead[0].group()),
            ("b1", Some(GroupKey::from("b")))
        );
        let got = settle_all(&q);
        let want_a: Vec<_> = [("a0", 3), ("a1", 1), ("a2", 1), ("a3", 1), ("a4", 1)]
            .map(|(v, a)| (v.to_string(), a))
            .into();
        assert_eq!(of(&got, "a"), want_a);
        assert_eq!(of(&got, "b"), [("b2".to_string(), 2)]);
        assert_eq!(of(&got, "free"), [("free".to_string(), 2)]);
        assert_eq!(q.stats().groups, 0);
        drop(q);
        // Everything settled stays settled.
        let q = open(&dir.0, false);
        assert!(q.try_consume().is_err());
        assert_eq!(q.stats().groups, 0);
    }

    #[test]
    fn a_held_group_is_still_held_after_a_crash_until_its_letter_is_redriven() {
        if let Some(dir) = child_dir() {
            let q = open(&dir, true);
            for i in 0..3 {
                q.produce_in_group(5, format!("c{i}")).unwrap();
            }
            q.consume().unwrap().dead_letter().unwrap();
            assert!(q.try_consume().is_err());
            die();
        }
        let dir = TempDir::new("held");
        child(
            "journaled::a_held_group_is_still_held_after_a_crash_until_its_letter_is_redriven",
            &dir.0,
        );
        let q = open(&dir.0, true);
        assert!(none_ready(&q), "a held group moved on after the restart");
        let s = q.stats();
        assert_eq!((s.groups, s.groups_held, s.grouped_waiting), (1, 1, 2));
        let letter = q.drain_dead_letters().pop().unwrap();
        assert_eq!(letter.payload(), "c0");
        q.redrive(letter).unwrap();
        let got: Vec<String> = settle_all(&q).into_iter().map(|(v, _)| v).collect();
        assert_eq!(got, ["c0", "c1", "c2"]);
    }

    #[test]
    fn a_drained_letter_holds_its_group_across_restarts_and_a_release_is_kept() {
        if let Some(dir) = child_dir() {
            let q = open(&dir, true);
            for i in 0..3 {
                q.produce_in_group("h", format!("h{i}")).unwrap();
            }
            for i in 0..2 {
                q.produce_in_group("r", format!("r{i}")).unwrap();
            }
            // Both heads die; "h" is drained while it holds its group,
            // "r" is released while its letter is still undrained.
            let mut dead = 0;
            while dead < 2 {
                let d = q.consume().unwrap();
                if d.ends_with('0') {
                    d.dead_letter().unwrap();
                    dead += 1;
                }
            }
            assert!(q.release_group("r"));
            let r1 = q.consume().unwrap();
            assert_eq!(*r1, "r1");
            r1.ack().unwrap();
            let letters: Vec<String> = q
                .drain_dead_letters()
                .into_iter()
                .map(|l| l.payload().clone())
                .filter(|p| p == "r0")
                .collect();
            assert_eq!(letters, ["r0"]);
            assert!(none_ready(&q));
            die();
        }
        let dir = TempDir::new("hold");
        child(
            "journaled::a_drained_letter_holds_its_group_across_restarts_and_a_release_is_kept",
            &dir.0,
        );
        // The drain above took "h0" too: "h" is held by a letter no longer
        // in the queue; "r" was released and is done.
        let q = open(&dir.0, true);
        assert!(none_ready(&q), "a held group moved on after the restart");
        let s = q.stats();
        assert_eq!(
            (s.groups, s.groups_held, s.grouped_waiting),
            (1, 1, 2),
            "{s:?}"
        );
        assert!(q.drain_dead_letters().is_empty());
        drop(q);
        // Still held after a second restart; then released by hand, and the
        // release is kept.
        let q = open(&dir.0, true);
        assert!(none_ready(&q));
        assert!(q.release_group("h"));
        let d = q.consume().unwrap();
        assert_eq!(*d, "h1");
        drop(d); // rolled back: still the head
        drop(q);
        let q = open(&dir.0, true);
        assert_eq!(q.stats().groups_held, 0);
        let got: Vec<String> = settle_all(&q).into_iter().map(|(v, _)| v).collect();
        assert_eq!(got, ["h1", "h2"]);
    }

    #[test]
    fn a_held_letter_drained_and_redriven_is_still_first_after_a_crash() {
        if let Some(dir) = child_dir() {
            let q = open(&dir, true);
            for i in 0..3 {
                q.produce_in_group(4u64, format!("k{i}")).unwrap();
            }
            q.consume().unwrap().dead_letter().unwrap();
            let letter = q.drain_dead_letters().pop().unwrap();
            // Redriven after k1 and k2 were produced: it is the head again,
            // and must stay first after the crash.
            q.redrive(letter).unwrap();
            assert_eq!(*q.consume().unwrap(), "k0"); // held at the crash
            die();
        }
        let dir = TempDir::new("redrive");
        child(
            "journaled::a_held_letter_drained_and_redriven_is_still_first_after_a_crash",
            &dir.0,
        );
        let q = open(&dir.0, true);
        let got = settle_all(&q);
        let want: Vec<(String, u32)> = [("k0", 2), ("k1", 1), ("k2", 1)]
            .map(|(v, a)| (v.to_string(), a))
            .into();
        assert_eq!(got, want);
    }
}

/// Messages of a group that a claim passed while their head was held are
/// not lost: when the head is acked they come back, in order, with the ids
/// their produce returned, while other work goes on meanwhile.
#[test]
fn messages_passed_over_while_their_head_is_held_come_back_in_order() {
    let q: Queue<&str> = Queue::new();
    let ids: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|&m| q.produce_in_group(1u64, m).unwrap())
        .collect();
    let head = q.try_consume().unwrap();
    assert_eq!(*head, "a");
    // A later ungrouped message: its claim walks past `b` and `c`.
    q.produce("x").unwrap();
    let x = q.try_consume().unwrap();
    assert_eq!(*x, "x");
    x.ack().unwrap();
    assert!(none_ready(&q), "b or c while a is held");
    head.ack().unwrap();
    for (i, name) in ["b", "c"].iter().enumerate() {
        let d = q.try_consume().unwrap();
        assert_eq!((*d, d.id(), d.attempt()), (*name, ids[i + 1], 1));
        assert!(none_ready(&q), "two of the group at once");
        d.ack().unwrap();
    }
    let s = q.stats();
    assert_eq!(
        (s.groups, s.grouped_waiting, s.acked, s.in_flight),
        (0, 0, 4, 0)
    );
}
