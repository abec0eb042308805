//! Race 21: a dead letter is redriven while the queue is closed. The
//! redrive either gets in before the close (then the message is delivered
//! before the closed queue reports itself drained) or is refused with the
//! letter back whole and its id free again; never lost, never half in.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{ProduceError, TryConsumeError};
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn redrive_vs_close_delivers_or_gives_the_letter_back() {
    model(|| {
        let drops = Drops::new();
        let q = queue(1);
        q.produce(drops.msg("m")).unwrap();
        q.try_consume().unwrap().dead_letter().unwrap();
        let letter = q.drain_dead_letters().pop().unwrap();
        let id = letter.id();
        let q2 = q.clone();
        let redrive = thread::spawn(move || q2.redrive(letter));
        q.close();
        let redriven = match redrive.join().unwrap() {
            Ok(back) => {
                assert_eq!(back, id);
                let d = q.try_consume().expect("a redriven message is delivered");
                assert_eq!((d.id(), d.attempt(), d.name()), (id, 1, "m"));
                d.ack().unwrap();
                true
            }
            Err(ProduceError::Closed(letter)) => {
                assert_eq!((letter.id(), letter.payload().name()), (id, "m"));
                // Its id was given back: a second try is refused for the
                // close, not as a duplicate.
                assert!(matches!(q.redrive(letter), Err(ProduceError::Closed(_))));
                false
            }
            Err(e) => panic!("{e}"),
        };
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Closed);
        assert_eq!(q.stats().redriven, u64::from(redriven));
        drop(q);
        assert_eq!(drops.count(), 1);
    });
}
