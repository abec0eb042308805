//! `Queue`: the public API of a JetStream queue handle.

use crate::builder::Builder;
use crate::dead_letter::DeadLetter;
use crate::delivery::Delivery;
use crate::error::{NatsError, ProduceError};
use crate::id::MessageId;
use crate::jetstream::{self, Counters, Empty, Fetched, Inner};
use crate::reply;
use crate::stats::Stats;
use bytes::Bytes;
use rebound::{
    Closed, ConsumeTimeoutError, Outcome, Payload, Pool, Processing, Processor, Source, Stop,
    TryConsumeError,
};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A handle to a queue kept by NATS JetStream: the API of
/// [`rebound::Queue`], shared by every process that connects to the same
/// server with the same name. Cloning is cheap; clones share the
/// connection.
///
/// Blocking, like `rebound::Queue`: a private tokio runtime drives the
/// client, so call it from ordinary threads, not from inside an async
/// runtime.
///
/// ```no_run
/// use rebound_nats::Queue;
/// use std::time::Duration;
///
/// let q: Queue<String> = Queue::builder("nats://127.0.0.1:4222", "jobs")
///     .lease(Duration::from_secs(30))
///     .max_attempts(5)
///     .connect()
///     .unwrap();
/// q.produce("hello".to_string()).unwrap();
/// let d = q.consume().unwrap();
/// assert_eq!(*d, "hello");
/// d.ack().unwrap();
/// ```
pub struct Queue<T> {
    pub(crate) inner: Arc<Inner>,
    pub(crate) payload: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            payload: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.inner.name)
            .field("server_version", &self.inner.server_version)
            .finish_non_exhaustive()
    }
}

fn encode<T: Payload>(value: &T) -> Bytes {
    let mut bytes = Vec::new();
    value.encode(&mut bytes);
    Bytes::from(bytes)
}

impl<T: Payload> Queue<T> {
    /// Starts configuring a queue named `name` on the server at `url`.
    ///
    /// ```no_run
    /// let q: rebound_nats::Queue<Vec<u8>> =
    ///     rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// ```
    pub fn builder(url: impl Into<String>, name: impl Into<String>) -> Builder<T> {
        Builder::new(url.into(), name.into())
    }

    /// The version the server announced when this handle connected.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<Vec<u8>> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// println!("nats-server {}", q.server_version());
    /// ```
    pub fn server_version(&self) -> &str {
        &self.inner.server_version
    }

    fn refuse_if_closed<V>(&self, value: V) -> Result<V, ProduceError<V>> {
        // Relaxed: `close` is a local switch; a produce racing with it may
        // go either way.
        if self.inner.closed.load(Ordering::Relaxed) {
            Err(ProduceError::Closed(value))
        } else {
            Ok(value)
        }
    }

    /// Adds a message, and returns once the server has stored it.
    ///
    /// # Errors
    /// [`ProduceError::Closed`] if this handle was closed;
    /// [`ProduceError::Nats`] if the server did not confirm it. Either way
    /// the value comes back.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// let id = q.produce("work".into()).unwrap();
    /// assert_eq!(q.consume().unwrap().id(), id);
    /// ```
    pub fn produce(&self, value: T) -> Result<MessageId, ProduceError<T>> {
        let value = self.refuse_if_closed(value)?;
        let inner = &self.inner;
        match inner.runtime.block_on(inner.publish(encode(&value))) {
            Ok(id) => {
                Counters::add(&inner.counters.produced, 1);
                Ok(id)
            }
            Err(e) => Err(ProduceError::Nats(value, e)),
        }
    }

    /// Adds many messages, published back to back and confirmed together;
    /// they are delivered in this order.
    ///
    /// # Errors
    /// As [`produce`](Self::produce), with every value back. On
    /// [`ProduceError::Nats`] some of them may have been stored: producing
    /// them again may deliver those twice (at least once).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// let ids = q.produce_batch(vec!["a".into(), "b".into()]).unwrap();
    /// assert_eq!(ids.len(), 2);
    /// ```
    pub fn produce_batch(
        &self,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Vec<MessageId>, ProduceError<Vec<T>>> {
        let values: Vec<T> = self.refuse_if_closed(values.into_iter().collect())?;
        let inner = &self.inner;
        let payloads = values.iter().map(encode).collect();
        match inner.runtime.block_on(inner.publish_batch(payloads)) {
            Ok(ids) => {
                Counters::add(&inner.counters.produced, ids.len() as u64);
                Ok(ids)
            }
            Err(e) => Err(ProduceError::Nats(values, e)),
        }
    }

    /// Adds a message that is delivered no earlier than `delay` from now.
    ///
    /// On a server with message schedules (nats-server 2.12 and later) it
    /// is a schedule in the work stream (`@at` its due time, wall clock):
    /// the server stores it on the work subject when it is due, with the
    /// id minted here (`s<nonce>-<n>`, no round trip for it). On an older
    /// server (2.9 has no schedules) it waits in the queue's delayed stream
    /// with its due time in a header; a mover in every connected process
    /// holds it back with a negative acknowledgement delayed until it is
    /// due, then copies it into the work stream (its id: `d<seq>`). Either
    /// way it is never delivered early, provided the clocks of the
    /// producing machine and of the server (2.12) or of the moving
    /// machines (2.9) agree.
    ///
    /// # Errors
    /// As [`produce`](Self::produce).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce_after("later".into(), std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn produce_after(&self, value: T, delay: Duration) -> Result<MessageId, ProduceError<T>> {
        let value = self.refuse_if_closed(value)?;
        let inner = &self.inner;
        let due = jetstream::unix_nanos()
            .saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        match inner
            .runtime
            .block_on(inner.publish_delayed(encode(&value), due))
        {
            Ok(id) => {
                Counters::add(&inner.counters.produced, 1);
                Ok(id)
            }
            Err(e) => Err(ProduceError::Nats(value, e)),
        }
    }

    /// Turns a fetched message into a delivery, or handles it if no handler
    /// may see it: a delivery past the last allowed attempt (its last one
    /// ran out of lease) is dead-lettered with `attempts == max_attempts`,
    /// a payload that does not decode is dead-lettered as rejected.
    fn admit(&self, fetched: Fetched) -> Option<Delivery<T>> {
        let inner = &self.inner;
        let Fetched { message, received } = fetched;
        // Not a JetStream delivery: nothing to settle.
        let reply = message.reply.as_deref().and_then(reply::parse)?;
        let (sequence, delivered) = (reply.stream_sequence, reply.delivered);
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(jetstream::ID))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(MessageId::work(sequence));
        // A deferred copy carries the attempts its message used before.
        let before: u64 = message
            .headers
            .as_ref()
            .and_then(|h| h.get(jetstream::BASE))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        let attempt = u32::try_from(before.saturating_add(delivered.max(1))).unwrap_or(u32::MAX);
        let max = inner.settings.max_attempts;
        if attempt > max {
            // If this fails the server delivers it again, and we retry.
            let _ = inner
                .runtime
                .block_on(inner.dead_letter(&message, id, max, "max_attempts"));
            return None;
        }
        match T::decode(&message.payload) {
            Ok(value) => {
                Counters::add(&inner.counters.delivered, 1);
                Some(Delivery::new(
                    Arc::clone(inner),
                    message,
                    value,
                    id,
                    attempt,
                    received,
                ))
            }
            Err(_) => {
                let _ =
                    inner
                        .runtime
                        .block_on(inner.dead_letter(&message, id, attempt, "undecodable"));
                None
            }
        }
    }

    fn take(
        &self,
        deadline: Option<Option<Instant>>,
        stop: Option<&Stop>,
    ) -> Result<Delivery<T>, Empty> {
        loop {
            let fetched = self.inner.next_fetched(deadline, stop)?;
            if let Some(delivery) = self.admit(fetched) {
                return Ok(delivery);
            }
        }
    }

    /// Claims the next ready message without waiting.
    ///
    /// # Errors
    /// [`TryConsumeError::Empty`] if none is ready (or the server cannot be
    /// reached); [`TryConsumeError::Closed`] if this handle is closed and
    /// the queue is drained.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// assert!(q.try_consume().unwrap_err().is_empty());
    /// ```
    pub fn try_consume(&self) -> Result<Delivery<T>, TryConsumeError> {
        match self.take(None, None) {
            Ok(delivery) => Ok(delivery),
            Err(Empty::Drained) => Err(TryConsumeError::Closed),
            Err(_) => Err(TryConsumeError::Empty),
        }
    }

    /// Claims the next message, waiting for one (through connection
    /// trouble too: the client reconnects).
    ///
    /// # Errors
    /// [`Closed`] once this handle is closed and the queue drained: nothing
    /// ready, held, delayed or waiting to be redelivered, in any process.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().ack().unwrap();
    /// q.close();
    /// assert!(q.consume().is_err());
    /// ```
    pub fn consume(&self) -> Result<Delivery<T>, Closed> {
        self.take(Some(None), None).map_err(|_| Closed)
    }

    /// Claims the next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ConsumeTimeoutError::Timeout`] if none came in time;
    /// [`ConsumeTimeoutError::Closed`] as [`consume`](Self::consume).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// let err = q.consume_timeout(std::time::Duration::from_millis(50)).unwrap_err();
    /// assert!(err.is_timeout());
    /// ```
    pub fn consume_timeout(&self, timeout: Duration) -> Result<Delivery<T>, ConsumeTimeoutError> {
        match self.take(Some(Instant::now().checked_add(timeout)), None) {
            Ok(delivery) => Ok(delivery),
            Err(Empty::Drained) => Err(ConsumeTimeoutError::Closed),
            Err(_) => Err(ConsumeTimeoutError::Timeout),
        }
    }

    /// Closes this handle and its clones: `produce` fails from now on, and
    /// once the queue is drained (across every process) `consume` returns
    /// [`Closed`]. Other processes' handles stay open. Closing twice is
    /// harmless.
    ///
    /// Returns once every settle its deliveries made so far has been
    /// written to the server (at most 5 s while the server cannot be
    /// reached; dropping the last handle does the same).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.close();
    /// assert!(q.produce("x".into()).is_err());
    /// ```
    pub fn close(&self) {
        // Relaxed: see `refuse_if_closed`.
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.wake.notify_waiters();
        self.inner.flush();
    }

    /// What this handle did, and what the server holds for the queue.
    ///
    /// # Errors
    /// [`NatsError`] if the server could not be asked.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// assert_eq!(q.stats().unwrap().ready, 1);
    /// ```
    pub fn stats(&self) -> Result<Stats, NatsError> {
        let inner = &self.inner;
        let c = &inner.counters;
        inner.runtime.block_on(async {
            let (ready, in_flight) = inner.consumer_counts().await?;
            Ok(Stats {
                produced: Counters::get(&c.produced),
                delivered: Counters::get(&c.delivered),
                acked: Counters::get(&c.acked),
                rolled_back: Counters::get(&c.rolled_back),
                deferred: Counters::get(&c.deferred),
                dead_lettered: Counters::get(&c.dead_lettered),
                ready,
                in_flight,
                delayed: inner.delayed_messages(ready + in_flight).await?,
                dead_letters: inner.stream_messages("-dead").await?,
            })
        })
    }

    /// Reads and removes the dead letters, oldest first.
    ///
    /// Each letter is read, then deleted from the dead-letter stream, then
    /// returned; if an error comes after some were removed, those are
    /// returned and the rest stay for the next call. Letters whose payload
    /// does not decode stay in the stream (for an operator).
    ///
    /// # Errors
    /// [`NatsError`] if nothing could be read.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("poison".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert_eq!(q.drain_dead_letters().unwrap().len(), 1);
    /// assert!(q.drain_dead_letters().unwrap().is_empty());
    /// ```
    pub fn drain_dead_letters(&self) -> Result<Vec<DeadLetter<T>>, NatsError> {
        let inner = &self.inner;
        let letters = inner
            .runtime
            .block_on(inner.drain_dead(|bytes| T::decode(bytes).ok()))?;
        Ok(letters
            .into_iter()
            .map(|(id, attempts, reason, payload)| DeadLetter {
                id,
                attempts,
                reason,
                payload,
            })
            .collect())
    }
}

impl<T: Payload + Send + Sync + 'static> Queue<T> {
    /// Configures a processor (the runtime of [`rebound::Queue::process`])
    /// over this queue.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// let handle = q.processor().concurrency(8).start(rebound::Pool::global(), |_| ()).unwrap();
    /// handle.shutdown(std::time::Duration::from_secs(1));
    /// ```
    pub fn processor(&self) -> Processor<T, Self> {
        Source::processor(self)
    }

    /// Handles every message of this queue with `handler` on a rayon pool,
    /// exactly as [`rebound::Queue::process`] does for the in-memory queue.
    ///
    /// # Panics
    /// If the operating system refuses to start the dispatcher thread; use
    /// [`processor`](Self::processor) to get that as an error.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// let handle = q.process(rebound::Pool::global(), |job| println!("{}", **job));
    /// q.produce("hello".into()).unwrap();
    /// q.close();
    /// assert_eq!(handle.join().acked, 1);
    /// ```
    pub fn process<F, R>(&self, pool: impl Into<Pool>, handler: F) -> Processing<T, Self>
    where
        F: Fn(&Delivery<T>) -> R + Send + Sync + 'static,
        R: Into<Outcome>,
    {
        match self.processor().start(pool, handler) {
            Ok(processing) => processing,
            Err(e) => panic!("rebound-nats: {e}"),
        }
    }
}

impl<T: Payload + Send + Sync + 'static> Source for Queue<T> {
    type Message = T;
    type Delivery = Delivery<T>;

    fn next_unless(&self, stop: &Stop) -> Option<Delivery<T>> {
        self.take(Some(None), Some(stop)).ok()
    }

    fn try_next(&self) -> Option<Delivery<T>> {
        self.take(None, None).ok()
    }

    fn wake(&self) {
        self.inner.wake.notify_waiters();
    }

    fn max_attempts(&self) -> u32 {
        self.inner.settings.max_attempts
    }
}
