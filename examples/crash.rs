//! A journaled queue survives `kill -9`: this program starts itself as a
//! worker process that produces jobs, handles some, and is killed in the
//! middle of its work; then it opens the same journal and shows what came
//! back: every job not acked, the ones in progress at the kill with their
//! attempt counts carried on, and a poison job that kills its worker every
//! time ending as a dead letter instead of crashing every restart.
//!
//! Run: `cargo run --release --example crash` (add a directory to keep the
//! journal there; by default a temporary one).

use rebound::{DeadLetterReason, Queue};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const JOBS: usize = 1_000;
const MAX_ATTEMPTS: u32 = 3;

fn open(dir: &Path) -> Queue<String> {
    Queue::builder()
        .max_attempts(MAX_ATTEMPTS)
        .lease(Duration::from_secs(30))
        .journal(dir)
        .open()
        .unwrap_or_else(|e| {
            eprintln!("cannot open {}: {e}", dir.display());
            std::process::exit(1)
        })
}

/// The worker: produces the jobs on its first run, acks some, starts
/// handling a few more, and dies in the middle (`SIGKILL`, as `kill -9` or
/// the OOM killer would). Job "poison" kills its worker whenever it runs.
fn worker(dir: &Path) -> ! {
    let q = open(dir);
    if q.recovery().is_some_and(|r| r.records == 0) {
        q.produce_batch((1..=JOBS / 2).map(|i| format!("job {i}")))
            .unwrap();
        q.produce("poison".to_string()).unwrap();
        q.produce_batch((JOBS / 2 + 1..=JOBS).map(|i| format!("job {i}")))
            .unwrap();
        println!(
            "  worker: produced {JOBS} jobs and a poison job after job {}",
            JOBS / 2
        );
    } else if let Some(r) = q.recovery() {
        println!(
            "  worker: reopened: {} pending ({} in progress at the kill), {} dead letters",
            r.pending, r.in_flight_at_crash, r.dead_letters
        );
    }
    let mut acked = 0;
    let mut in_hand = Vec::new();
    while let Ok(d) = q.try_consume() {
        if d.attempt() > 1 && d.as_str() != "poison" {
            println!("  worker: {} is back, attempt {}", d.as_str(), d.attempt());
        }
        if d.as_str() == "poison" {
            println!(
                "  worker: handling \"poison\" (attempt {}): the process dies",
                d.attempt()
            );
            kill_self();
        }
        if acked < 300 {
            d.ack().unwrap();
            acked += 1;
        } else if in_hand.len() < 5 {
            in_hand.push(d);
        } else {
            break;
        }
    }
    println!(
        "  worker: acked {acked}, {} in progress ({}), now killed",
        in_hand.len(),
        in_hand
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    kill_self()
}

fn kill_self() -> ! {
    // SAFETY: `kill` on this process with a valid signal.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!()
}

fn main() {
    let mut args = std::env::args().skip(1);
    if let Some(flag) = args.next() {
        if flag == "--worker" {
            worker(Path::new(&args.next().expect("--worker DIR")));
        }
        run(PathBuf::from(flag), false);
    } else {
        let dir = std::env::temp_dir().join(format!("rebound-crash-demo-{}", std::process::id()));
        run(dir, true);
    }
}

fn run(dir: PathBuf, temporary: bool) {
    println!("journal: {}", dir.display());
    for round in 1..=MAX_ATTEMPTS + 1 {
        println!("run {round}:");
        let status = Command::new(std::env::current_exe().unwrap())
            .arg("--worker")
            .arg(&dir)
            .status()
            .unwrap();
        println!("  worker exit: {status}");
    }
    println!("after the kills:");
    let q = open(&dir);
    let r = q.recovery().unwrap();
    println!(
        "  open: {} records replayed in {:?}; {} pending, {} were in progress at the kill, {} dead-lettered at open",
        r.records, r.elapsed, r.pending, r.in_flight_at_crash, r.dead_lettered_at_open
    );
    for letter in q.drain_dead_letters() {
        assert_eq!(letter.reason(), DeadLetterReason::Crashed);
        println!(
            "  dead letter: {:?} after {} attempts, reason {:?}",
            letter.payload(),
            letter.attempts(),
            letter.reason()
        );
    }
    let mut back = 0;
    while let Ok(d) = q.try_consume() {
        back += 1;
        d.ack().unwrap();
    }
    println!("  came back: {back} jobs, acked now");
    println!(
        "  nothing lost: {} jobs acked by the workers before their kills + {back} = {JOBS}",
        JOBS - back
    );
    drop(q);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
