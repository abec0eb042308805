//! Internal profiling harness: 1 producer, 1 consumer, produce -> consume -> ack.
fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000_000);
    let q: rebound::Queue<u64> = rebound::Queue::new();
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        let c = q.clone();
        s.spawn(move || {
            while let Ok(d) = c.consume() {
                std::hint::black_box(*d);
                d.ack().unwrap();
            }
        });
        for i in 0..n {
            q.produce(i).unwrap();
        }
        q.close();
    });
    let el = start.elapsed();
    println!(
        "{n} msgs in {el:?}: {:.2} M/s",
        n as f64 / el.as_secs_f64() / 1e6
    );
}
