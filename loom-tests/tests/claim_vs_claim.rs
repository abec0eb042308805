//! Race 1: two consumers claim the same message. Exactly one wins; the
//! other sees it as taken (nothing to claim) and changes nothing.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::__loom::Redeliverer;
use rebound::{Queue, TryConsumeError};
use rebound_loom_tests::{Drops, Msg, claimed_at_lease_end, model, queue};

/// Two consumers try to claim message `m` at once; the winner checks it
/// reads the payload the producer wrote, at `attempt`, and acks it; the
/// loser must see nothing to claim. Returns how many won.
fn race_two_consumers(q: &Queue<Msg>, attempt: u32) -> usize {
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            thread::spawn(move || match q.try_consume() {
                Ok(d) => {
                    assert_eq!((d.name(), d.attempt()), ("m", attempt));
                    d.ack().unwrap();
                    true
                }
                Err(e) => {
                    assert_eq!(e, TryConsumeError::Empty, "the loser sees it taken");
                    false
                }
            })
        })
        .collect();
    consumers
        .into_iter()
        .map(|c| c.join().unwrap())
        .filter(|&won| won)
        .count()
}

#[test]
fn two_consumers_claim_one_message_exactly_one_wins() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        q.produce(drops.msg("m")).unwrap();
        let wins = race_two_consumers(&q, 1);
        assert_eq!(wins, 1, "exactly one consumer holds the message");
        let stats = q.stats();
        assert_eq!((stats.delivered, stats.acked), (1, 1));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        drop(q);
        assert_eq!(drops.count(), 1, "the payload is dropped exactly once");
    });
}

/// The same race over a redelivered message: its claim goes through a
/// redelivery batch (a cursor of its own, then a compare-exchange on the
/// word). Exactly one wins, at attempt 2.
#[test]
fn two_consumers_claim_one_redelivered_message_exactly_one_wins() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        q.produce(drops.msg("m")).unwrap();
        let mut redeliverer = Redeliverer::new();
        q.try_consume().unwrap().rollback().unwrap();
        redeliverer.redeliver_due(&q);
        let wins = race_two_consumers(&q, 2);
        assert_eq!(wins, 1, "exactly one consumer holds the redelivery");
        let stats = q.stats();
        assert_eq!((stats.delivered, stats.acked), (2, 1));
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1, "the payload is dropped exactly once");
    });
}

/// Why a redelivery's claim keeps the word's compare-exchange: a message
/// whose lease expired is claimed again while its expired holder lets go of
/// its `Delivery` (a holder decrement on the same word). Neither write is
/// lost: the claim wins at attempt 2, and the payload is dropped once, after
/// both holders let go.
#[test]
fn redelivery_claim_vs_expired_holder_letting_go_neither_is_lost() {
    model(|| {
        let drops = Drops::new();
        let (q, mut redeliverer, stale) = claimed_at_lease_end(&drops, 4);
        redeliverer.redeliver_due(&q);
        let letting_go = thread::spawn(move || drop(stale));
        let again = q.try_consume().expect("the redelivery is ready");
        assert_eq!((again.name(), again.attempt()), ("m", 2));
        letting_go.join().unwrap();
        again.ack().unwrap();
        assert_eq!(drops.count(), 1, "dropped once both holders let go");
        let stats = q.stats();
        assert_eq!((stats.expired, stats.redelivered, stats.acked), (1, 1, 1));
        drop((q, redeliverer));
        assert_eq!(drops.count(), 1);
    });
}

/// Two consumers claim while a producer fills the open block (two slots
/// under `cfg(rebound_loom)`) and opens the next one: every message is
/// delivered exactly once.
#[test]
fn claims_race_a_producer_opening_the_next_block_each_message_once() {
    model(|| {
        let drops = Drops::new();
        let q = queue(4);
        q.produce(drops.msg("a")).unwrap();
        let producer = {
            let q = q.clone();
            let (b, c) = (drops.msg("b"), drops.msg("c"));
            thread::spawn(move || {
                q.produce(b).unwrap(); // fills the block
                q.produce(c).unwrap(); // opens the next one
            })
        };
        let consumer = {
            let q = q.clone();
            thread::spawn(move || {
                let d = q.try_consume().ok()?;
                let name = d.name();
                d.ack().unwrap();
                Some(name)
            })
        };
        let mut got: Vec<&str> = Vec::new();
        if let Ok(d) = q.try_consume() {
            got.push(d.name());
            d.ack().unwrap();
        }
        producer.join().unwrap();
        got.extend(consumer.join().unwrap());
        while let Ok(d) = q.try_consume() {
            got.push(d.name());
            d.ack().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, ["a", "b", "c"], "each message delivered exactly once");
        drop(q);
        assert_eq!(drops.count(), 3);
    });
}
