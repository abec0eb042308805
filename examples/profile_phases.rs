//! Internal profiling harness: single-threaded produce phase, then consume+ack phase.
use std::time::Instant;
fn main() {
    let n: u64 = 2_000_000;
    let q: rebound::Queue<u64> = rebound::Queue::new();
    for round in 0..3 {
        let t = Instant::now();
        for i in 0..n {
            q.produce(i).unwrap();
        }
        let p = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            let d = q.try_consume().unwrap();
            std::hint::black_box(*d);
            d.ack().unwrap();
        }
        let c = t.elapsed();
        let (tx, rx) = crossbeam_channel::unbounded();
        let t = Instant::now();
        for i in 0..n {
            tx.send(i).unwrap();
        }
        let cp = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(rx.try_recv().unwrap());
        }
        let cc = t.elapsed();
        println!(
            "round {round}: produce {:.1} ns, consume+ack {:.1} ns | channel send {:.1} ns, recv {:.1} ns",
            p.as_nanos() as f64 / n as f64,
            c.as_nanos() as f64 / n as f64,
            cp.as_nanos() as f64 / n as f64,
            cc.as_nanos() as f64 / n as f64
        );
    }
}
