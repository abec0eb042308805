//! Race 16: a holder rolls back while the last `Queue` handle is dropped
//! (teardown). Teardown stops the inbox, discards every pending or
//! rolled-back message (`-> Discarded`) and leaves claimed ones to their
//! holders; the rollback turns the claim `RolledBack` and hands it to the
//! inbox, or, once the inbox is stopped, discards it itself. Whatever the
//! order (the rollback's hand-over before the stop, after it, or teardown's
//! discard between the rollback's transition and its hand-over), the
//! rollback succeeds (the claim was live), and the rolled-back payload and
//! the pending one are each dropped exactly once, with the queue's last
//! `Arc` (loom reports a leaked one).
#![cfg(rebound_loom)]

use loom::thread;
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn rollback_vs_teardown_drops_each_payload_once() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        q.produce(drops.msg("a")).unwrap();
        q.produce(drops.msg("b")).unwrap(); // pending at teardown
        let a = q.try_consume().unwrap();
        let holder = thread::spawn(move || {
            assert_eq!(a.name(), "a");
            a.rollback().is_ok()
        });
        drop(q); // the last handle: teardown
        assert!(holder.join().unwrap(), "a live claim rolls back");
        assert_eq!(drops.count(), 2, "each payload dropped exactly once");
    });
}
