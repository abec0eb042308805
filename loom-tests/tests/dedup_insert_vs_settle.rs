//! Race 22: a producer offers a message with an id while the holder of the
//! live message with that id acks it. The offer is refused (the ack had
//! not freed the id yet) or accepted (it had), never both live, and the
//! id is never left taken with no message behind it.
#![cfg(rebound_loom)]

use loom::thread;
use rebound::{MessageId, ProduceError, TryConsumeError};
use rebound_loom_tests::{Drops, model, queue};

#[test]
fn produce_with_id_vs_the_ack_that_frees_the_id() {
    model(|| {
        let drops = Drops::new();
        let q = queue(2);
        let id = MessageId::from_key("k");
        q.produce_with_id(id, drops.msg("first")).unwrap();
        let d = q.try_consume().unwrap();
        let holder = thread::spawn(move || d.ack().unwrap());
        let second = drops.msg("second");
        let offered = match q.produce_with_id(id, second) {
            Ok(got) => {
                assert_eq!(got, id);
                true
            }
            Err(ProduceError::Duplicate(second)) => {
                drop(second);
                false
            }
            Err(e) => panic!("{e}"),
        };
        holder.join().unwrap();
        if offered {
            let d = q.try_consume().expect("the accepted message is live");
            assert_eq!((d.id(), d.name()), (id, "second"));
            d.ack().unwrap();
        }
        assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Empty);
        // Whatever the interleaving, the id is free now (no window).
        let third = drops.msg("third");
        q.produce_with_id(id, third).expect("the id was freed");
        q.try_consume().unwrap().ack().unwrap();
        drop(q);
        assert_eq!(drops.count(), 3);
    });
}
