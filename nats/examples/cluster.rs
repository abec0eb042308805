//! Several worker processes share one JetStream queue; one is killed
//! mid-run, and the messages it held come back to the others: nothing is
//! lost.
//!
//! `cargo run --release -p rebound-nats --example cluster`
//!
//! Starts its own `nats-server -js` (install it with
//! `apt-get install -y nats-server`) on a free loopback port, produces
//! `MESSAGES` jobs, starts `WORKERS` copies of itself as workers (each runs
//! `Queue::process` with a handler that takes `WORK` per job), kills worker
//! 0 with SIGKILL once it has handled `KILL_AFTER` jobs, waits for the
//! others to drain the queue, and checks every job was handled.

#[path = "../tests/support/mod.rs"]
mod support;

use rebound::Pool;
use rebound_nats::Queue;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const MESSAGES: usize = 300;
const WORKERS: usize = 3;
const KILL_AFTER: usize = 20;
const WORK: Duration = Duration::from_millis(10);
const LEASE: Duration = Duration::from_secs(2);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(&args[2], &args[3]);
    }

    let server = support::NatsServer::start();
    println!("nats-server at {}", server.url());
    let q: Queue<String> = Queue::builder(server.url(), "cluster")
        .lease(LEASE)
        .connect()?;
    println!("server version {}", q.server_version());
    q.produce_batch((0..MESSAGES).map(|i| format!("job-{i:03}")))?;
    println!("produced {MESSAGES} jobs; starting {WORKERS} workers");

    let exe = std::env::current_exe()?;
    let (lines, seen) = mpsc::channel::<String>();
    let mut children = Vec::new();
    for w in 0..WORKERS {
        let mut child = Command::new(&exe)
            .args(["worker", server.url(), &w.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(lines);

    // handled[job] = [(worker, attempt), ...]
    let mut handled: BTreeMap<String, Vec<(String, u32)>> = BTreeMap::new();
    let mut by_victim = 0;
    let mut killed = false;
    for line in seen {
        let mut parts = line.split_whitespace();
        let (Some(worker), Some(job), Some(attempt)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        handled
            .entry(job.to_string())
            .or_default()
            .push((worker.to_string(), attempt.parse()?));
        if worker == "0" {
            by_victim += 1;
            if by_victim == KILL_AFTER && !killed {
                children[0].kill()?;
                killed = true;
                println!("killed worker 0 (SIGKILL) after it handled {KILL_AFTER} jobs");
            }
        }
    }
    for child in &mut children {
        child.wait()?;
    }

    let redelivered: BTreeSet<&String> = handled
        .iter()
        .filter(|(_, runs)| runs.iter().any(|(_, attempt)| *attempt > 1))
        .map(|(job, _)| job)
        .collect();
    let per_worker = |w: &str| {
        handled
            .values()
            .flatten()
            .filter(|(worker, _)| worker == w)
            .count()
    };
    for w in 0..WORKERS {
        println!(
            "worker {w} handled {} deliveries",
            per_worker(&w.to_string())
        );
    }
    println!(
        "{} jobs came back after the kill (attempt 2, handled by the others): {:?}",
        redelivered.len(),
        redelivered
    );
    let missing = MESSAGES - handled.len();
    println!(
        "{} of {MESSAGES} jobs handled, {missing} lost",
        handled.len()
    );
    let stats = q.stats()?;
    println!(
        "left on the server: ready {}, in flight {}",
        stats.ready, stats.in_flight
    );
    if missing != 0 || stats.ready + stats.in_flight != 0 {
        return Err("messages were lost".into());
    }
    Ok(())
}

/// A worker process: handles jobs until the queue is drained everywhere,
/// printing `worker job attempt` for each.
fn worker(url: &str, id: &str) -> Result<(), Box<dyn std::error::Error>> {
    let q: Queue<String> = Queue::builder(url, "cluster").lease(LEASE).connect()?;
    // Closed: this worker ends once the queue is drained in every process.
    q.close();
    let pool = std::sync::Arc::new(rayon::ThreadPoolBuilder::new().num_threads(4).build()?);
    let id = id.to_string();
    let handle = q.process(Pool::from(&pool), move |job| {
        std::thread::sleep(WORK);
        println!("{id} {} {}", **job, job.attempt());
    });
    handle.join();
    Ok(())
}
