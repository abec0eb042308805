//! A short, realistic run: several producers publish orders, several
//! consumers handle them, and some handlers fail, panic, outlive their lease
//! or hit a poison message. At the end it prints what happened.
//!
//! Run: `cargo run --release --example demo [messages]` (default 400000).

use rebound::{Backoff, Queue};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const PRODUCERS: u64 = 3;
const CONSUMERS: u64 = 3;

/// An order to process; every 20_000th is malformed and can never succeed.
struct Order {
    number: u64,
    cents: u64,
}

/// A cheap deterministic generator, one per consumer.
struct Rng(u64);
impl Rng {
    fn per_100k(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 33) % 100_000
    }
}

fn main() {
    let messages: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(400_000);
    // Handlers that panic unwind into `catch_unwind` below; keep the output
    // to the summary.
    std::panic::set_hook(Box::new(|_| {}));

    let queue: Queue<Order> = Queue::builder()
        .lease(Duration::from_millis(25))
        .backoff(
            Backoff::exponential(Duration::from_millis(1), Duration::from_millis(50))
                .with_jitter(0.2),
        )
        .max_attempts(5)
        .build();
    let revenue = AtomicU64::new(0);
    let panics = AtomicU64::new(0);
    let slow = AtomicU64::new(0);
    let start = Instant::now();

    thread::scope(|s| {
        for c in 0..CONSUMERS {
            let (queue, revenue, panics, slow) = (queue.clone(), &revenue, &panics, &slow);
            s.spawn(move || {
                let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ (c + 1));
                while let Ok(delivery) = queue.consume() {
                    let roll = rng.per_100k();
                    let poison = delivery.number % 20_000 == 7;
                    if poison || roll < 4_000 {
                        // 4%: a transient error; try again later.
                        delivery.rollback().expect("settled within the lease");
                    } else if roll < 4_500 {
                        // 0.5%: the handler panics; dropping the delivery
                        // while unwinding rolls it back.
                        panics.fetch_add(1, Ordering::Relaxed);
                        let _ = catch_unwind(AssertUnwindSafe(move || {
                            let _held = delivery;
                            panic!("handler bug");
                        }));
                    } else if roll < 4_520 {
                        // 0.02%: a hung handler outlives its lease; the message
                        // is redelivered meanwhile and this late ack is refused.
                        slow.fetch_add(1, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(35));
                        let _ = delivery.ack();
                    } else {
                        revenue.fetch_add(delivery.cents, Ordering::Relaxed);
                        delivery.ack().expect("settled within the lease");
                    }
                }
            });
        }
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let queue = queue.clone();
                s.spawn(move || {
                    for i in (p..messages).step_by(PRODUCERS as usize) {
                        queue
                            .produce(Order {
                                number: i,
                                cents: 100 + i % 900,
                            })
                            .expect("queue open");
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().expect("producer");
        }
        // Consumers drain everything, retries included, then stop.
        queue.close();
    });

    let elapsed = start.elapsed();
    let s = queue.stats();
    let dead = queue.drain_dead_letters();
    println!("rebound demo: {PRODUCERS} producers, {CONSUMERS} consumers, {messages} orders");
    println!("  produced        {:>10}", s.produced);
    println!("  delivered       {:>10}", s.delivered);
    println!("  acked           {:>10}", s.acked);
    println!(
        "  rolled back     {:>10}   (errors, and {} panics)",
        s.rolled_back,
        panics.into_inner()
    );
    println!(
        "  expired         {:>10}   ({} hung handlers)",
        s.expired,
        slow.into_inner()
    );
    println!("  redelivered     {:>10}", s.redelivered);
    println!("  dead-lettered   {:>10}", s.dead_lettered);
    for letter in dead.iter().take(3) {
        println!(
            "    {} after {} attempts ({:?})",
            letter.id(),
            letter.attempts(),
            letter.reason()
        );
    }
    println!(
        "  left in queue   {:>10}",
        s.ready + s.delayed + s.in_flight
    );
    println!(
        "  revenue         {:>10.2}",
        revenue.into_inner() as f64 / 100.0
    );
    println!(
        "  elapsed         {:>10.3} s   ({:.2} M orders/s end to end)",
        elapsed.as_secs_f64(),
        s.produced as f64 / elapsed.as_secs_f64() / 1e6
    );
    assert_eq!(
        s.produced,
        s.acked + s.dead_lettered,
        "every order is accounted for"
    );
}
