//! rebound-nats: rebound's queue API, guarantees and processing runtime
//! over NATS JetStream, so that several processes on several machines share
//! one queue that outlives all of them.
//!
//! Change the constructor; keep the handlers:
//!
//! ```no_run
//! use rebound::{Outcome, Pool};
//! use rebound_nats::Queue;
//! use std::time::Duration;
//!
//! let q: Queue<String> = Queue::builder("nats://127.0.0.1:4222", "jobs")
//!     .lease(Duration::from_secs(30))
//!     .max_attempts(5)
//!     .connect()?;
//! q.produce("hello".to_string())?;
//!
//! let handle = q.process(Pool::global(), |job| {
//!     if job.is_empty() { Outcome::DeadLetter } else { Outcome::Ack }
//! });
//! q.close();
//! let report = handle.join(); // once the queue is drained, in every process
//! assert_eq!(report.acked, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! How our states and operations map onto JetStream, and what is and is
//! not guaranteed across processes, is in the README ("Scaling out") and in
//! `docs/design.md`.
#![forbid(unsafe_code)]

mod builder;
mod dead_letter;
mod delivery;
mod error;
mod id;
mod jetstream;
mod queue;
mod reply;
mod schedule;
mod stats;

pub use builder::Builder;
pub use dead_letter::DeadLetter;
pub use delivery::Delivery;
pub use error::{ConnectError, NatsError, ProduceError};
pub use id::{MessageId, ParseIdError};
pub use queue::Queue;
pub use stats::Stats;
