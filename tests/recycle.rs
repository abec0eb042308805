//! Dead blocks are reused for new messages: nothing of their old messages
//! may show through (state, ids, payloads).

use rebound::Queue;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Counts drops, to see every payload dropped exactly once.
struct Payload(u64, Arc<AtomicUsize>);

impl Drop for Payload {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

/// Waves of 300 blocks (64 messages each) produced, drained and acked, with
/// pauses in which the redeliverer prunes the dead blocks and hands them
/// back for reuse: every wave still comes out complete, in order, with
/// fresh ids, and every payload is dropped once.
#[test]
fn reused_blocks_carry_nothing_over() {
    const WAVES: u64 = 4;
    const PER_WAVE: u64 = 300 * 64;
    let drops = Arc::new(AtomicUsize::new(0));
    let q: Queue<Payload> = Queue::new();
    let mut ids = HashSet::new();
    for wave in 0..WAVES {
        for i in 0..PER_WAVE {
            q.produce(Payload(wave * PER_WAVE + i, Arc::clone(&drops)))
                .unwrap();
        }
        for i in 0..PER_WAVE {
            let d = q.try_consume().unwrap();
            assert_eq!(d.0, wave * PER_WAVE + i);
            assert_eq!(d.attempt(), 1);
            assert!(ids.insert(d.id()), "id {} handed out twice", d.id());
            d.ack().unwrap();
        }
        assert!(q.try_consume().is_err(), "a reused slot delivered again");
        // Let the redeliverer prune (it looks every 10 ms while busy).
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(drops.load(Ordering::SeqCst) as u64, WAVES * PER_WAVE);
    let s = q.stats();
    assert_eq!(
        (s.produced, s.acked, s.ready, s.in_flight),
        (WAVES * PER_WAVE, WAVES * PER_WAVE, 0, 0)
    );
    drop(q);
    assert_eq!(drops.load(Ordering::SeqCst) as u64, WAVES * PER_WAVE);
}

/// One message at a time: produced, claimed, acked. Each block is dead soon
/// after its last message is acked, and the producer opening a later block
/// takes it back itself (the oldest registered block, when nothing else
/// references it). Meanwhile one claim of the first block is held past its
/// lease: that block cannot be taken back, the blocks behind it pile up
/// until the redeliverer takes them, and the held message still expires
/// and comes back. Nothing is lost, delivered twice or dropped twice.
#[test]
fn blocks_taken_back_by_producers_carry_nothing_over_and_a_held_claim_still_expires() {
    const MESSAGES: u64 = 400 * 64;
    let drops = Arc::new(AtomicUsize::new(0));
    let q: Queue<Payload> = Queue::builder().lease(Duration::from_millis(50)).build();
    q.produce(Payload(u64::MAX, Arc::clone(&drops))).unwrap();
    let held = q.try_consume().unwrap();
    let held_id = held.id();
    let mut ids = HashSet::from([held_id]);
    for i in 0..MESSAGES {
        q.produce(Payload(i, Arc::clone(&drops))).unwrap();
        let mut d = q.try_consume().unwrap();
        if d.id() == held_id {
            // The lease and the backoff ran out meanwhile (a slow machine):
            // redelivered, ahead of message `i`.
            assert_eq!((d.0, d.attempt()), (u64::MAX, 2));
            d.ack().unwrap();
            d = q.try_consume().unwrap();
        }
        assert_eq!((d.0, d.attempt()), (i, 1));
        assert!(ids.insert(d.id()), "id {} handed out twice", d.id());
        d.ack().unwrap();
    }
    // The held message comes back once its lease has run out (if it did
    // not already); the old claim can no longer settle it.
    if q.stats().acked == MESSAGES {
        let again = q.consume_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            (again.id(), again.0, again.attempt()),
            (held_id, u64::MAX, 2)
        );
        again.ack().unwrap();
    }
    assert!(held.ack().is_err(), "an expired claim settled its message");
    assert!(q.try_consume().is_err(), "a reused slot delivered again");
    let s = q.stats();
    assert_eq!(
        (s.produced, s.acked, s.ready, s.in_flight),
        (MESSAGES + 1, MESSAGES + 1, 0, 0)
    );
    drop(q);
    assert_eq!(drops.load(Ordering::SeqCst) as u64, MESSAGES + 1);
}
