//! Blocked consumers park: four idle consumers and the redeliverer use well
//! under 1% of a core. Linux only (reads per-thread CPU time from /proc).
#![cfg(target_os = "linux")]

use rebound::Queue;
use std::thread;
use std::time::Duration;

/// CPU time (user + system) of one thread, in clock ticks (1/100 s).
fn cpu_ticks(stat_path: &str) -> u64 {
    let stat = std::fs::read_to_string(stat_path).unwrap();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The redeliverer's stat file; it names itself once it runs.
fn redeliverer_stat() -> String {
    for _ in 0..1000 {
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let path = task.unwrap().path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if comm.starts_with("rebound-redeliv") {
                return path.join("stat").to_string_lossy().into_owned();
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("no redeliverer thread");
}

#[test]
fn four_blocked_consumers_and_the_redeliverer_stay_idle() {
    const IDLE: Duration = Duration::from_secs(2);
    let q: Queue<u64> = Queue::new();
    // Some traffic first, so the redeliverer has to notice it went quiet.
    for i in 0..1000 {
        q.produce(i).unwrap();
        q.consume().unwrap().ack().unwrap();
    }
    let redeliverer = redeliverer_stat();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || {
                let before = cpu_ticks("/proc/thread-self/stat");
                let got = q.consume().is_err();
                (got, cpu_ticks("/proc/thread-self/stat") - before)
            })
        })
        .collect();
    // Let the upkeep notice the silence before measuring it.
    thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(&redeliverer);
    thread::sleep(IDLE);
    let redeliverer_ticks = cpu_ticks(&redeliverer) - before;
    q.close();
    let consumer_ticks: u64 = consumers
        .into_iter()
        .map(|c| c.join().unwrap())
        .map(|(closed, t)| {
            assert!(closed);
            t
        })
        .sum();
    // 1% of a core over 2 s is 2 ticks; allow one tick of rounding per thread.
    assert!(
        consumer_ticks <= 1,
        "blocked consumers used {consumer_ticks} ticks in {IDLE:?}"
    );
    assert!(
        redeliverer_ticks <= 1,
        "idle redeliverer used {redeliverer_ticks} ticks in {IDLE:?}"
    );
}
