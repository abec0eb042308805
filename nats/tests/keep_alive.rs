//! `Settle::keep_alive` on a JetStream delivery, used directly (the
//! runtime's `auto_extend` is in the conformance suite): a settle after the
//! guard drops sees the extended deadline, the guard's drop stops the
//! extensions, and a settle while the guard lives stops them too, so no
//! `+WPI` follows it (each test starts its own `nats-server -js`).

mod support;

use rebound::Settle;
use rebound_nats::Queue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LEASE: Duration = Duration::from_millis(400);

/// Long enough for anything to arrive on a loaded machine; only ever
/// waited for in full when a test fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn connect(server: &support::NatsServer) -> Queue<String> {
    Queue::builder(server.url(), "keep")
        .lease(LEASE)
        .connect()
        .unwrap()
}

/// A callback that counts the extensions.
fn counter() -> (Arc<AtomicU64>, Arc<dyn Fn() + Send + Sync>) {
    let count = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&count);
    // Relaxed: read after the guard's drop, which the call happens before.
    let extended = Arc::new(move || {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    (count, extended)
}

#[test]
fn a_settle_after_the_guard_drops_sees_the_extensions() {
    let server = support::NatsServer::start();
    let q = connect(&server);
    q.produce("long".into()).unwrap();
    let d = q.consume_timeout(PATIENCE).unwrap();
    let (count, extended) = counter();
    let guard = d.keep_alive(Duration::from_secs(60), extended).unwrap();
    std::thread::sleep(LEASE * 3);
    assert!(q.try_consume().unwrap_err().is_empty(), "redelivered");
    drop(guard);
    assert!(count.load(Ordering::Relaxed) >= 2);
    d.ack().unwrap();
    assert!(
        q.consume_timeout(LEASE * 2).is_err(),
        "acked, yet redelivered"
    );
}

#[test]
fn dropping_the_guard_stops_the_extensions() {
    let server = support::NatsServer::start();
    let q = connect(&server);
    q.produce("a".into()).unwrap();
    let d = q.consume_timeout(PATIENCE).unwrap();
    let (_count, extended) = counter();
    drop(d.keep_alive(Duration::from_secs(60), extended).unwrap());
    let again = q.consume_timeout(PATIENCE).unwrap();
    assert_eq!(again.attempt(), 2);
    assert!(d.ack().is_err(), "the stale holder settled");
    again.ack().unwrap();
}

#[test]
fn no_progress_report_follows_a_settle() {
    let server = support::NatsServer::start();
    let q = connect(&server);
    q.produce("a".into()).unwrap();
    let d = q.consume_timeout(PATIENCE).unwrap();
    let (count, extended) = counter();
    let guard = d.keep_alive(Duration::from_secs(60), extended).unwrap();
    // Settled while the guard lives: a `+WPI` after this `-NAK` would
    // restart the server's `AckWait` in place of the delay, and the
    // message would not come back after the delay (not at all while
    // `+WPI`s kept coming).
    let delay = LEASE * 3;
    let rolled = Instant::now();
    d.rollback_after(delay).unwrap();
    let again = q.consume_timeout(PATIENCE).unwrap();
    assert!(rolled.elapsed() >= delay, "redelivered early");
    assert_eq!(again.attempt(), 2);
    drop(guard);
    assert_eq!(count.load(Ordering::Relaxed), 0);
    again.ack().unwrap();
}
