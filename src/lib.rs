//! rebound: an in-process message queue with at-least-once delivery,
//! exclusive claims, leases, rollback, delayed redelivery and dead letters.
//!
//! ```
//! use rebound::{Backoff, Queue};
//! use std::time::Duration;
//!
//! let q: Queue<String> = Queue::builder()
//!     .lease(Duration::from_secs(30))
//!     .backoff(Backoff::exponential(Duration::from_millis(1), Duration::from_secs(1)))
//!     .max_attempts(3)
//!     .build();
//! q.produce("hello".to_string()).unwrap();
//!
//! let d = q.consume().unwrap();          // exclusive claim, attempt 1
//! assert_eq!(*d, "hello");
//! d.rollback().unwrap();                 // comes back after the backoff
//! let d = q.consume().unwrap();
//! assert_eq!(d.attempt(), 2);
//! d.ack().unwrap();                      // done
//! assert_eq!(q.stats().acked, 1);
//! ```
//!
//! Most programs do not write that loop: [`Queue::process`] runs a handler
//! for every message on a rayon thread pool, acks, retries or dead-letters
//! from what it returns ([`Outcome`]), contains panics, limits how many
//! messages are in flight, and shuts down without losing any
//! ([`Processing::shutdown`]).
//!
//! ```
//! use rebound::{Pool, Queue};
//!
//! let q: Queue<u32> = Queue::new();
//! let handle = q.process(Pool::global(), |n| if **n % 2 == 0 { Ok(()) } else { Err("odd") });
//! q.produce(2).unwrap();
//! q.close();
//! assert_eq!(handle.join().acked, 1);
//! ```
//!
//! # Guarantees
//! - **Never lost.** A produced message is acked, dead-lettered, or still
//!   in the queue (pending, held, or waiting to be redelivered). Dropping an
//!   unsettled [`Delivery`] (a panic included) rolls it back; a lease that
//!   runs out redelivers it.
//! - **Never held twice.** At any instant at most one live [`Delivery`]
//!   exists per message; a settled or expired one can never act again
//!   ([`LeaseExpired`]), even after the message was redelivered (each claim
//!   carries its attempt number as a generation).
//! - **Bounded retries.** With `max_attempts = N` a message is delivered at
//!   most N times, then dead-lettered with `attempts() == N`.
//! - **Order.** Each producer's messages are claimed in the order it
//!   produced them, whatever the number of producers; delayed and
//!   redelivered messages in due-time order, never before they are due.
//! - **At least once, not exactly once.** A handler that outlives its lease
//!   may still be running when the message is redelivered; both can read
//!   the payload (hence `T: Sync`), only the new one can settle it.
//!
//! - **Durable, if asked.** A queue opened with
//!   [`Builder::journal`]`(dir)...`[`open`](Builder::open) journals every
//!   produce, claim and settle before the call returns: a crash of the
//!   process loses nothing, a message in progress comes back with its
//!   attempt count carried on, and one whose handler kills the process ends
//!   as a dead letter. See `docs/durability.md`.
//!
//! See `docs/design.md` for the state machine and its memory orderings.

mod backoff;
mod batch;
mod block;
mod block_pool;
mod builder;
mod chain;
mod clock;
mod codec;
#[cfg(feature = "async")]
mod consume_async;
mod cursor;
mod dead_letter;
mod dedup;
mod delivery;
mod error;
mod grouped;
mod groups;
mod id;
mod id_table;
mod inbox;
mod index;
#[cfg(feature = "journal")]
mod journal;
mod manual_clock;
mod process;
mod queue;
mod redelivery;
mod retry_budget;
mod shared;
mod slot;
mod state;
mod stats;
mod sync;
mod teardown;
mod unwind;
mod wait;
#[cfg(feature = "async")]
mod wait_async;
mod waiters;

pub use backoff::Backoff;
pub use builder::Builder;
#[cfg(feature = "serde")]
pub use codec::Serde;
pub use codec::{DecodeError, Payload};
pub use dead_letter::{DeadLetter, DeadLetterReason};
pub use delivery::Delivery;
pub use error::{
    BuildError, Closed, ConsumeTimeoutError, LeaseExpired, ProduceError, StartError,
    TryConsumeError,
};
pub use groups::GroupKey;
pub use id::MessageId;
#[cfg(feature = "journal")]
pub use journal::{Durability, JournalStats, OpenError, Recovery};
pub use manual_clock::ManualClock;
pub use process::{Outcome, Pool, Processing, Processor, Report, Settle, Source, Stop};
pub use queue::Queue;
pub use retry_budget::RetryBudget;
pub use stats::Stats;

#[cfg(rebound_loom)]
#[doc(hidden)]
#[path = "loom.rs"]
pub mod __loom;

// The unit tests run in the normal world; the loom models are the
// `rebound-loom-tests` crate's (`loom-tests/`).
#[cfg(all(test, rebound_loom))]
compile_error!(
    "rebound's unit tests do not build under `--cfg rebound_loom`: run the models in loom-tests/"
);

/// The README's examples, compiled and run as doc tests (they include the
/// journal's).
#[cfg(all(doctest, feature = "journal"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
