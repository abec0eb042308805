//! Race 10: a consumer claims a fresh message while its producer writes and
//! publishes it. The claimer reads the payload the producer wrote: the
//! producer's publish (a Release) and the consumer's Acquire load of the
//! state word that finds it `Pending` order the write before the read,
//! and nothing else on the fresh-claim path does (the cursor's
//! compare-exchange is Relaxed, the claim a plain store).
//!
//! The claiming thread neither parks nor runs a redeliverer pass, so it
//! runs no SeqCst fence: under loom every SeqCst fence joins one global
//! clock, and the producer's fence after it publishes (before it looks for
//! sleepers) would hand the claimer the producer's writes whatever the
//! orderings of the claim path (docs/verification.md, "Fences under loom").
//! The message goes into the open block, so the producer takes no lock the
//! claimer takes after its write either.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::TryConsumeError;
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn claim_of_a_message_being_published_reads_its_payload() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        let producer = {
            let q = q.clone();
            let m = drops.msg("m");
            thread::spawn(move || {
                q.produce(m).unwrap();
            })
        };
        // One look, concurrent with the produce: empty, or the message.
        let early = q.try_consume().ok().map(|d| {
            let got = (d.name(), d.attempt());
            d.ack().unwrap();
            got
        });
        producer.join().unwrap();
        let got = early.unwrap_or_else(|| {
            let d = q.try_consume().expect("produced before the join");
            let got = (d.name(), d.attempt());
            d.ack().unwrap();
            got
        });
        assert_eq!(got, ("m", 1));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        assert_eq!(q.stats().acked, 1);
        drop(q);
        assert_eq!(drops.count(), 1, "the payload is dropped exactly once");
    });
}
