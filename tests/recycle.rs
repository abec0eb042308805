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
        // Let the redeliverer prune (it looks every millisecond while busy).
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
