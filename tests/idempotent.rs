//! `produce_with_id`, the dedup window, and `redrive`.

use rebound::{Backoff, DeadLetterReason, MessageId, ProduceError, Queue, TryConsumeError};
use std::time::Duration;

fn queue() -> Queue<u32> {
    Queue::builder()
        .backoff(Backoff::fixed(Duration::from_secs(3600)))
        .max_attempts(2)
        .build()
}

#[test]
fn an_id_is_taken_while_its_message_is_pending_held_waiting_or_an_undrained_dead_letter() {
    let q = queue();
    let id = MessageId::from_key("job 1");
    assert_eq!(q.produce_with_id(id, 1).unwrap(), id);
    let dup = |q: &Queue<u32>| match q.produce_with_id(id, 2) {
        Err(ProduceError::Duplicate(2)) => true,
        Ok(_) => false,
        Err(e) => panic!("{e}"),
    };
    assert!(dup(&q), "pending");
    let d = q.consume().unwrap();
    assert_eq!((d.id(), *d), (id, 1));
    assert!(dup(&q), "held");
    d.rollback().unwrap();
    assert!(dup(&q), "waiting for redelivery (an hour of backoff)");
    assert_eq!(q.stats().produced, 1);
    // Dead-lettered but not drained: still taken; drained: free.
    drop(q);
    let q = queue();
    q.produce_with_id(id, 1).unwrap();
    q.consume().unwrap().dead_letter().unwrap();
    assert!(dup(&q), "an undrained dead letter");
    let dead = q.drain_dead_letters();
    assert_eq!(dead[0].id(), id);
    assert!(!dup(&q), "free once drained (no window)");
}

#[test]
fn an_acked_id_is_free_at_once_without_a_window_and_taken_for_the_window_with_one() {
    let q = queue();
    let id = MessageId::from_uuid(uuid::Uuid::from_u128(7));
    q.produce_with_id(id, 1).unwrap();
    q.consume().unwrap().ack().unwrap();
    q.produce_with_id(id, 2).unwrap();

    let q: Queue<u32> = Queue::builder()
        .dedup_window(Duration::from_millis(50))
        .build();
    q.produce_with_id(id, 1).unwrap();
    q.consume().unwrap().ack().unwrap();
    assert!(q.produce_with_id(id, 2).unwrap_err().is_duplicate());
    std::thread::sleep(Duration::from_millis(60));
    q.produce_with_id(id, 3).unwrap();
    assert_eq!(*q.consume().unwrap(), 3);
}

#[test]
fn ids_minted_by_produce_are_refused_and_produce_never_clashes_with_own_ids() {
    let q = queue();
    let minted = q.produce(1).unwrap();
    assert!(q.produce_with_id(minted, 2).unwrap_err().is_duplicate());
    let d = q.consume().unwrap();
    d.ack().unwrap();
    assert!(
        q.produce_with_id(minted, 2).unwrap_err().is_duplicate(),
        "a minted id names a message this queue had"
    );
}

#[test]
fn own_ids_and_minted_ids_keep_one_producers_order() {
    let q: Queue<u32> = Queue::new();
    let mut ids = Vec::new();
    for i in 0..300 {
        let id = if i % 3 == 0 {
            q.produce_with_id(MessageId::from_key(i.to_string()), i)
                .unwrap()
        } else {
            q.produce(i).unwrap()
        };
        ids.push(id);
    }
    for (i, id) in ids.iter().enumerate() {
        let d = q.try_consume().unwrap();
        assert_eq!((*d, d.id()), (i as u32, *id));
        d.ack().unwrap();
    }
}

#[test]
fn racing_producers_of_one_id_get_exactly_one_message_in() {
    let q: Queue<u32> = Queue::new();
    let keys = 200;
    let accepted: u32 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let q = &q;
                s.spawn(move || {
                    (0..keys)
                        .filter(|k| {
                            q.produce_with_id(MessageId::from_key(format!("k{k}")), t)
                                .is_ok()
                        })
                        .count() as u32
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(accepted, keys);
    let mut seen = std::collections::HashSet::new();
    while let Ok(d) = q.try_consume() {
        assert!(seen.insert(d.id()), "one id delivered twice");
        d.ack().unwrap();
    }
    assert_eq!(seen.len(), keys as usize);
}

#[test]
fn a_redriven_dead_letter_comes_back_with_its_id_and_a_fresh_attempt_budget() {
    let q: Queue<u32> = Queue::builder()
        .backoff(Backoff::fixed(Duration::ZERO))
        .max_attempts(2)
        .build();
    let id = q.produce(5).unwrap();
    for _ in 0..2 {
        q.consume().unwrap().rollback().unwrap();
    }
    let letter = q.drain_dead_letters().pop().unwrap();
    assert_eq!(
        (letter.id(), letter.attempts(), letter.reason()),
        (id, 2, DeadLetterReason::MaxAttempts)
    );
    assert_eq!(q.redrive(letter).unwrap(), id);
    // Two more attempts, the first numbered 1.
    for attempt in 1..=2 {
        let d = q.consume().unwrap();
        assert_eq!((d.id(), d.attempt(), *d), (id, attempt, 5));
        d.rollback().unwrap();
    }
    let again = q.drain_dead_letters().pop().unwrap();
    assert_eq!((again.id(), again.attempts()), (id, 2));
    let s = q.stats();
    assert_eq!((s.redriven, s.produced, s.dead_lettered), (1, 2, 2));
}

#[test]
fn a_redrive_that_cannot_happen_gives_the_letter_back() {
    let q: Queue<u32> = Queue::builder().max_attempts(1).build();
    let id = MessageId::from_key("x");
    q.produce_with_id(id, 1).unwrap();
    q.consume().unwrap().dead_letter().unwrap();
    let letter = q.drain_dead_letters().pop().unwrap();
    // The id was used again meanwhile: the redrive would make two.
    q.produce_with_id(id, 2).unwrap();
    let letter = match q.redrive(letter) {
        Err(ProduceError::Duplicate(letter)) => letter,
        other => panic!("{other:?}"),
    };
    assert_eq!((letter.id(), *letter.payload()), (id, 1));
    q.consume().unwrap().ack().unwrap();
    q.close();
    let letter = match q.redrive(letter) {
        Err(ProduceError::Closed(letter)) => letter,
        other => panic!("{other:?}"),
    };
    assert_eq!(*letter.payload(), 1);
    assert_eq!(q.try_consume().unwrap_err(), TryConsumeError::Closed);
    assert_eq!(q.stats().redriven, 0);
}
