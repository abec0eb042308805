//! What one queue handle shares with its clones and deliveries: the private
//! tokio runtime, the client, the three streams and their consumers, and
//! every operation that talks to the server.
//!
//! The streams of a queue named `jobs`:
//! - `jobs` (subject `jobs.work`, work-queue retention): ready messages. A
//!   durable pull consumer `jobs-workers` with explicit acks, `AckWait` =
//!   the lease, no `MaxDeliver` (attempts are bounded by the client, see
//!   `Queue::admit`). On a server with message schedules (2.12+) the
//!   stream also has the subjects `jobs.sched.<id>`, one per message of
//!   `produce_after` or `defer` until it is due (see [`crate::schedule`]),
//!   and the consumer is filtered on `jobs.work`.
//! - `jobs-delayed` (subject `jobs.delayed`, work-queue retention): messages
//!   of `produce_after` and `defer` on a server without schedules, with
//!   their due time in a header, until a mover copies them into `jobs` once
//!   due. With schedules the mover still runs, for what older clients put
//!   there.
//! - `jobs-dead` (subject `jobs.dead`, limits retention): dead letters, with
//!   their id, attempts and reason in headers, until drained.

use crate::error::{ConnectError, NatsError};
use crate::id::{MessageId, Mint};
use crate::reply;
use crate::schedule;
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer};
use async_nats::jetstream::message::Message;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{AckKind, Context};
use bytes::Bytes;
use futures_util::StreamExt;
use rebound::{Backoff, DeadLetterReason};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{self, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The header of a message in the delayed stream: when it is due, in
/// nanoseconds since the Unix epoch.
pub(crate) const DUE: &str = "Rebound-Due";
/// The header carrying a message's id where the stream sequence is not it
/// (a delayed message moved to the work stream; a dead letter).
pub(crate) const ID: &str = "Rebound-Id";
/// A dead letter's attempts.
pub(crate) const ATTEMPTS: &str = "Rebound-Attempts";
/// A dead letter's reason: `max_attempts`, `rejected` or `undecodable`.
pub(crate) const REASON: &str = "Rebound-Reason";
/// The header of a deferred message's copy: the attempts it used before
/// (a defer uses none, so its next delivery's attempt is this plus the
/// server's delivery count).
pub(crate) const BASE: &str = "Rebound-Attempts-Before";
/// The server's de-duplication header.
const MSG_ID: &str = "Nats-Msg-Id";

/// How long one wait for a message lasts before the waiter looks again at
/// the queue's state (closed, drained).
const POLL: Duration = Duration::from_millis(500);

/// The longest [`Inner::flush`] waits for the connection (while the server
/// cannot be reached).
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The settings of a queue, checked by the builder.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) lease: Duration,
    pub(crate) margin: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) prefetch: usize,
    pub(crate) memory: bool,
}

/// Counters of what this handle (and its clones) did.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) produced: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) rolled_back: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Relaxed: a plain count that nothing else is ordered by.
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        // Relaxed: see `add`.
        counter.load(Ordering::Relaxed)
    }
}

/// A message fetched from the server, not yet handed out.
pub(crate) struct Fetched {
    pub(crate) message: Message,
    pub(crate) received: Instant,
}

/// What a waiting consume ended with, short of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Empty {
    /// Nothing ready (a try, or the deadline passed).
    Now,
    /// The handle is closed and nothing is left anywhere.
    Drained,
    /// The stop flag was set.
    Stopped,
}

/// Everything a queue handle, its clones and its deliveries share.
pub(crate) struct Inner {
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) js: Context,
    pub(crate) name: String,
    pub(crate) work_subject: String,
    pub(crate) delayed_subject: String,
    pub(crate) dead_subject: String,
    /// Whether `produce_after` and `defer` use message schedules (the
    /// server has them), else the delayed stream.
    pub(crate) schedules: bool,
    /// The ids of this handle's scheduled messages.
    pub(crate) mint: Mint,
    pub(crate) consumer: PullConsumer,
    pub(crate) settings: Settings,
    /// The version the server announced.
    pub(crate) server_version: String,
    /// Messages fetched by a batched pull and not handed out yet; their
    /// leases run from `received`.
    pub(crate) buffer: Mutex<VecDeque<Fetched>>,
    pub(crate) closed: AtomicBool,
    /// Wakes consumers waiting for a message (`Source::wake`).
    pub(crate) wake: Notify,
    pub(crate) counters: Counters,
    /// The mover of delayed messages, aborted when the last handle goes.
    pub(crate) mover: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("name", &self.name)
            .field("server_version", &self.server_version)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    /// The last handle is gone: writes out what its deliveries settled
    /// (unless dropped inside an async runtime, where it cannot wait),
    /// then stops the mover; the runtime and the connection go with it.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            self.flush();
        }
        if let Some(mover) = self.mover.take() {
            mover.abort();
        }
    }
}

fn nats(context: &'static str) -> impl Fn(&dyn std::fmt::Display) -> NatsError {
    move |e| NatsError::from_error(context, e)
}

fn connect(context: &'static str) -> impl Fn(&dyn std::fmt::Display) -> ConnectError {
    move |e| ConnectError::Nats(NatsError::from_error(context, e))
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The subjects of queue `name`'s schedules: `<name>.sched.<id>`.
pub(crate) fn schedule_subjects(name: &str) -> String {
    format!("{name}.sched.>")
}

/// Creates (or finds, if they exist with the same settings) the streams and
/// the consumer of queue `name`; spawns the mover of delayed messages.
/// With `schedules`, the work stream also takes the schedules and the
/// consumer is filtered on the work subject; a stream or consumer made
/// without them (by an older rebound-nats) is updated so.
pub(crate) async fn open(
    js: Context,
    name: &str,
    settings: &Settings,
    schedules: bool,
) -> Result<(PullConsumer, tokio::task::JoinHandle<()>), ConnectError> {
    let storage = if settings.memory {
        StorageType::Memory
    } else {
        StorageType::File
    };
    let stream = |stream: String, subject: String, retention| stream::Config {
        name: stream,
        subjects: vec![subject],
        retention,
        storage,
        ..Default::default()
    };
    let work_subject = format!("{name}.work");
    let mut work_config = stream(
        name.to_string(),
        work_subject.clone(),
        RetentionPolicy::WorkQueue,
    );
    if schedules {
        work_config.subjects.push(schedule_subjects(name));
        work_config.allow_message_schedules = true;
    }
    let mut work = js
        .get_or_create_stream(work_config)
        .await
        .map_err(|e| connect("creating the work stream")(&e))?;
    if schedules {
        allow_schedules(&js, &mut work, name).await?;
    }
    let delayed = js
        .get_or_create_stream(stream(
            format!("{name}-delayed"),
            format!("{name}.delayed"),
            RetentionPolicy::WorkQueue,
        ))
        .await
        .map_err(|e| connect("creating the delayed stream")(&e))?;
    js.get_or_create_stream(stream(
        format!("{name}-dead"),
        format!("{name}.dead"),
        RetentionPolicy::Limits,
    ))
    .await
    .map_err(|e| connect("creating the dead-letter stream")(&e))?;
    let workers = format!("{name}-workers");
    let consumer: PullConsumer = work
        .get_or_create_consumer(
            &workers,
            consumer::pull::Config {
                durable_name: Some(workers.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.lease,
                // Unlimited: the client dead-letters the delivery after the
                // last allowed one (see `admit`), so that no message can be
                // stranded by a `MaxDeliver` advisory nobody heard.
                max_deliver: -1,
                max_ack_pending: -1,
                // Not the schedules, which only the server reads.
                filter_subject: if schedules {
                    work_subject.clone()
                } else {
                    String::new()
                },
                ..Default::default()
            },
        )
        .await
        .map_err(|e| connect("creating the consumer")(&e))?;
    let consumer = if schedules && consumer.cached_info().config.filter_subject != work_subject {
        filter_consumer(&work, consumer, &workers, work_subject).await?
    } else {
        consumer
    };
    let movers = format!("{name}-mover");
    let mover: PullConsumer = delayed
        .get_or_create_consumer(
            &movers,
            consumer::pull::Config {
                durable_name: Some(movers.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| connect("creating the delayed consumer")(&e))?;
    let task = tokio::spawn(move_when_due(js, mover, format!("{name}.work")));
    Ok((consumer, task))
}

/// Makes sure the work stream takes the schedules: a stream made without
/// them (by an older rebound-nats) gets the schedule subjects and
/// `allow_msg_schedules`, keeping its messages and other settings.
async fn allow_schedules(
    js: &Context,
    work: &mut stream::Stream,
    name: &str,
) -> Result<(), ConnectError> {
    let refused = |e: &dyn std::fmt::Display| {
        ConnectError::Schedules(NatsError::from_error("updating the work stream", e))
    };
    let subjects = schedule_subjects(name);
    let mut config = work.info().await.map_err(|e| refused(&e))?.config.clone();
    if config.allow_message_schedules && config.subjects.contains(&subjects) {
        return Ok(());
    }
    if !config.subjects.contains(&subjects) {
        config.subjects.push(subjects);
    }
    config.allow_message_schedules = true;
    js.update_stream(&config).await.map_err(|e| refused(&e))?;
    Ok(())
}

/// Filters on the work subject a workers' consumer made without the
/// filter (by an older rebound-nats), keeping its other settings; returns
/// the updated consumer. (A create with the name of an existing durable
/// consumer updates it; the client's `update_consumer` needs server 2.10
/// features we do not enable.)
async fn filter_consumer(
    work: &stream::Stream,
    consumer: PullConsumer,
    workers: &str,
    work_subject: String,
) -> Result<PullConsumer, ConnectError> {
    let refused = |e: &dyn std::fmt::Display| {
        ConnectError::Schedules(NatsError::from_error("updating the consumer", e))
    };
    let mut config = consumer.cached_info().config.clone();
    config.filter_subject = work_subject;
    work.create_consumer(config)
        .await
        .map_err(|e| refused(&e))?;
    work.get_consumer(workers).await.map_err(|e| refused(&e))
}

/// The mover: takes delayed messages as they come, holds each back with a
/// negative acknowledgement delayed until its due time, and once it is due
/// copies it into the work stream (de-duplicated by its id, so a crash
/// between the copy and the ack does not copy it twice within the stream's
/// de-duplication window) and acks it.
async fn move_when_due(js: Context, mover: PullConsumer, work_subject: String) {
    loop {
        let batch = mover
            .batch()
            .max_messages(64)
            .expires(POLL)
            .messages()
            .await;
        let Ok(mut batch) = batch else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        while let Some(Ok(message)) = batch.next().await {
            let due = message
                .headers
                .as_ref()
                .and_then(|h| h.get(DUE))
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .unwrap_or(0);
            let now = unix_nanos();
            if due > now {
                // Not yet: the server holds it back until it is due. Never
                // early: the delay is computed from the due time, and a
                // message that still comes back early is held back again.
                let _ = message
                    .ack_with(AckKind::Nak(Some(Duration::from_nanos(due - now))))
                    .await;
                continue;
            }
            let Some(reply) = message.reply.as_deref().and_then(reply::parse) else {
                continue;
            };
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            // A deferred message keeps its id and carries its attempts on;
            // a `produce_after` message is named after its delayed record.
            let moved = MessageId::delayed(reply.stream_sequence).to_string();
            let id = header(ID).unwrap_or_else(|| moved.clone());
            let mut headers = HeaderMap::new();
            headers.insert(ID, id.as_str());
            if let Some(base) = header(BASE) {
                headers.insert(BASE, base.as_str());
            }
            // One copy per delayed record, however often a message is deferred.
            headers.insert(MSG_ID, format!("moved-{moved}").as_str());
            let copied = async {
                js.publish_with_headers(work_subject.clone(), headers, message.payload.clone())
                    .await?
                    .await
            }
            .await;
            if copied.is_ok() {
                let _ = message.ack().await;
            }
            // Else the message comes back after the mover's AckWait.
        }
    }
}

impl Inner {
    /// Sends `kind` for `message` (an ack, a negative ack, a progress
    /// report): hands it to the client's outgoing queue, behind everything
    /// this handle sent before, which the connection writes in that order.
    /// No reply is awaited (JetStream confirms no acknowledgement of a
    /// pull consumer unless asked to).
    ///
    /// The hand-over is first tried on the calling thread, which succeeds
    /// whenever the queue has room, without a trip into the runtime; only
    /// when it is full does the caller wait on the runtime for room.
    pub(crate) fn send_ack(&self, message: &Message, kind: AckKind) -> Result<(), NatsError> {
        let mut send = pin!(message.ack_with(kind));
        // Polled outside the runtime: the send only reserves a place in a
        // `tokio::sync::mpsc` channel, which needs no runtime context.
        let sent = match send
            .as_mut()
            .poll(&mut task::Context::from_waker(Waker::noop()))
        {
            Poll::Ready(sent) => sent,
            Poll::Pending => self.runtime.block_on(send),
        };
        sent.map_err(|e| nats("ack")(&e))
    }

    /// Waits until everything handed to the connection so far (the
    /// settles of this handle's deliveries above all) has been written to
    /// the server's socket, or `FLUSH_WAIT` has passed.
    pub(crate) fn flush(&self) {
        let client = self.js.client();
        // The timer is made inside: it needs the runtime's context.
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(FLUSH_WAIT, client.flush()).await });
    }

    /// Publishes one message to the work stream and waits for the server's
    /// confirmation.
    pub(crate) async fn publish(&self, payload: Bytes) -> Result<MessageId, NatsError> {
        let ack = self
            .js
            .publish(self.work_subject.clone(), payload)
            .await
            .map_err(|e| nats("publish")(&e))?
            .await
            .map_err(|e| nats("publish")(&e))?;
        Ok(MessageId::work(ack.sequence))
    }

    /// Publishes many messages back to back, then waits for every
    /// confirmation; their order in the stream is the order given.
    pub(crate) async fn publish_batch(
        &self,
        payloads: Vec<Bytes>,
    ) -> Result<Vec<MessageId>, NatsError> {
        let mut pending = Vec::with_capacity(payloads.len());
        for payload in payloads {
            pending.push(
                self.js
                    .publish(self.work_subject.clone(), payload)
                    .await
                    .map_err(|e| nats("publish")(&e))?,
            );
        }
        let mut ids = Vec::with_capacity(pending.len());
        for ack in pending {
            let ack = ack.await.map_err(|e| nats("publish")(&e))?;
            ids.push(MessageId::work(ack.sequence));
        }
        Ok(ids)
    }

    /// Publishes a message due at `due` (Unix nanoseconds): as a schedule
    /// (its id minted here, carried in `Rebound-Id`) if the server has
    /// them, else to the delayed stream (its id is its sequence there).
    pub(crate) async fn publish_delayed(
        &self,
        payload: Bytes,
        due: u64,
    ) -> Result<MessageId, NatsError> {
        if self.schedules {
            let id = self.mint.next();
            let mut headers = HeaderMap::new();
            headers.insert(ID, id.to_string().as_str());
            self.schedule(id, headers, payload, due)
                .await
                .map_err(|e| nats("publish")(&e))?;
            return Ok(id);
        }
        let mut headers = HeaderMap::new();
        headers.insert(DUE, due.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(self.delayed_subject.clone(), headers, payload)
            .await
            .map_err(|e| nats("publish")(&e))?
            .await
            .map_err(|e| nats("publish")(&e))?;
        Ok(MessageId::delayed(ack.sequence))
    }

    /// Publishes `payload` with `headers` as a schedule on the subject of
    /// `slot` (an id of this handle's mint, used once), to be stored on
    /// the work subject at `due` (Unix nanoseconds), and waits for the
    /// server's confirmation.
    async fn schedule(
        &self,
        slot: MessageId,
        mut headers: HeaderMap,
        payload: Bytes,
        due: u64,
    ) -> Result<(), async_nats::Error> {
        headers.insert(schedule::SCHEDULE, schedule::at(due).as_str());
        headers.insert(schedule::TARGET, self.work_subject.as_str());
        let subject = format!("{}.sched.{slot}", self.name);
        self.js
            .publish_with_headers(subject, headers, payload)
            .await?
            .await?;
        Ok(())
    }

    /// Fetches up to `max` messages that are ready now, without waiting.
    /// Their leases are taken to run from before the request was sent: the
    /// server starts each `AckWait` later, when it sends the message, and
    /// answers at once (a round trip), so this errs on the safe side and
    /// reads the clock once per pull.
    ///
    /// The pull runs as a task on the runtime's thread, which receives the
    /// messages from the connection; the caller is woken once, with the
    /// whole batch, instead of once per message.
    async fn fetch_ready(&self, max: usize) -> Vec<Fetched> {
        let consumer = self.consumer.clone();
        let pull = self.runtime.spawn(async move {
            let asked = Instant::now();
            let mut out = Vec::with_capacity(max);
            if let Ok(mut batch) = consumer.fetch().max_messages(max).messages().await {
                while let Some(Ok(message)) = batch.next().await {
                    out.push(Fetched {
                        message,
                        received: asked,
                    });
                }
            }
            out
        });
        // A pull that panicked fetched nothing we can use.
        pull.await.unwrap_or_default()
    }

    /// Waits up to `wait` for one message.
    async fn fetch_one(&self, wait: Duration) -> Option<Fetched> {
        let batch = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await;
        match batch {
            // Bounded here too: a pull whose end the server never reports
            // (a lost status message) must not stop the waiter from
            // looking at the queue's state again.
            Ok(mut batch) => match tokio::time::timeout(wait + POLL, batch.next()).await {
                Ok(Some(Ok(message))) => Some(Fetched {
                    message,
                    received: Instant::now(),
                }),
                _ => None,
            },
            Err(_) => {
                // A connection problem: the client reconnects by itself;
                // do not spin meanwhile.
                tokio::time::sleep(wait.min(POLL)).await;
                None
            }
        }
    }

    /// Whether this handle is closed and no message is left in the work or
    /// delayed stream (none pending, none held, none waiting to come back).
    async fn drained(&self) -> bool {
        // Relaxed: the flag only gates this check; a consumer that misses a
        // concurrent `close` sees it on its next poll.
        if !self.closed.load(Ordering::Relaxed) {
            return false;
        }
        if !self
            .buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
            return false;
        }
        for stream in [self.name.clone(), format!("{}-delayed", self.name)] {
            match self.js.get_stream(&stream).await {
                Ok(mut stream) => match stream.info().await {
                    Ok(info) if info.state.messages == 0 => {}
                    _ => return false,
                },
                Err(_) => return false,
            }
        }
        true
    }

    /// The next fetched message: from the buffer, or fetched now (waiting
    /// until `deadline`, or not at all, and until `stop` is set and `wake`
    /// notified).
    pub(crate) fn next_fetched(
        &self,
        deadline: Option<Option<Instant>>,
        stop: Option<&rebound::Stop>,
    ) -> Result<Fetched, Empty> {
        if let Some(fetched) = self.pop() {
            return Ok(fetched);
        }
        self.runtime.block_on(async {
            loop {
                let notified = self.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if stop.is_some_and(|s| s.is_set()) {
                    return Err(Empty::Stopped);
                }
                // A `VecDeque` made from a `Vec` keeps its allocation: the
                // batch is not copied again when it becomes the buffer.
                let mut ready = VecDeque::from(self.fetch_ready(self.settings.prefetch).await);
                if let Some(first) = ready.pop_front() {
                    let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
                    if buffer.is_empty() {
                        *buffer = ready;
                    } else {
                        buffer.extend(ready);
                    }
                    return Ok(first);
                }
                if self.drained().await {
                    return Err(Empty::Drained);
                }
                let wait = match deadline {
                    None => return Err(Empty::Now),
                    Some(None) => POLL,
                    Some(Some(deadline)) => match deadline.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => left.min(POLL),
                        _ => return Err(Empty::Now),
                    },
                };
                // At least what the server accepts for a pull's expiry.
                let wait = wait.max(Duration::from_millis(10));
                tokio::select! {
                    fetched = self.fetch_one(wait) => {
                        if let Some(fetched) = fetched {
                            return Ok(fetched);
                        }
                    }
                    () = &mut notified => {}
                }
            }
        })
    }

    fn pop(&self) -> Option<Fetched> {
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// Defers `message` (delivery `attempt` of `id`): a copy, due at `due`
    /// (Unix ns), keeping the id and the attempts used before this one,
    /// goes in as a schedule if the server has them (the server stores it
    /// on the work subject when it is due), else to the delayed stream (the
    /// mover puts it back in the work stream when it is due). The caller
    /// then acks the original. A crash between the two leaves both: the
    /// message is delivered twice (at least once), never lost.
    pub(crate) async fn defer(
        &self,
        message: &Message,
        id: MessageId,
        attempt: u32,
        due: u64,
    ) -> Result<(), NatsError> {
        let mut headers = HeaderMap::new();
        headers.insert(DUE, due.to_string().as_str());
        headers.insert(ID, id.to_string().as_str());
        headers.insert(BASE, attempt.saturating_sub(1).to_string().as_str());
        // A retried publish of this defer is one copy.
        headers.insert(MSG_ID, format!("defer-{id}-{attempt}-{due}").as_str());
        if self.schedules {
            // The server does not copy `Nats-Msg-Id` onto the message it
            // stores when due, so the copy is not taken for a duplicate.
            return self
                .schedule(self.mint.next(), headers, message.payload.clone(), due)
                .await
                .map_err(|e| nats("defer")(&e));
        }
        self.js
            .publish_with_headers(
                self.delayed_subject.clone(),
                headers,
                message.payload.clone(),
            )
            .await
            .map_err(|e| nats("defer")(&e))?
            .await
            .map_err(|e| nats("defer")(&e))?;
        Ok(())
    }

    /// Parks a message in the dead-letter stream with its id, attempts and
    /// reason (de-duplicated by its id), then acks it off the work stream.
    /// A crash between the two leaves it in both: it is delivered again
    /// and dead-lettered again, and the second copy is dropped by the
    /// server if it comes within the de-duplication window (two minutes by
    /// default); after that the dead letter appears twice. Nothing is lost.
    pub(crate) async fn dead_letter(
        &self,
        message: &Message,
        id: MessageId,
        attempts: u32,
        reason: &str,
    ) -> Result<(), NatsError> {
        let mut headers = HeaderMap::new();
        let id = id.to_string();
        headers.insert(ID, id.as_str());
        headers.insert(ATTEMPTS, attempts.to_string().as_str());
        headers.insert(REASON, reason);
        headers.insert(MSG_ID, format!("dead-{id}").as_str());
        self.js
            .publish_with_headers(self.dead_subject.clone(), headers, message.payload.clone())
            .await
            .map_err(|e| nats("dead letter")(&e))?
            .await
            .map_err(|e| nats("dead letter")(&e))?;
        message
            .ack_with(AckKind::Ack)
            .await
            .map_err(|e| nats("ack")(&e))?;
        Counters::add(&self.counters.dead_lettered, 1);
        Ok(())
    }

    /// Reads and removes the dead letters, oldest first: each is read, then
    /// deleted, then returned. Stops at the first error once it has
    /// something to return (what it did not return stays in the stream).
    /// Letters whose payload `decode` refuses stay in the stream.
    pub(crate) async fn drain_dead<T>(
        &self,
        decode: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<(MessageId, u32, DeadLetterReason, T)>, NatsError> {
        let mut stream = self
            .js
            .get_stream(format!("{}-dead", self.name))
            .await
            .map_err(|e| nats("dead-letter stream")(&e))?;
        let state = stream
            .info()
            .await
            .map_err(|e| nats("dead-letter stream")(&e))?
            .state
            .clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return Ok(out);
        }
        for seq in state.first_sequence..=state.last_sequence {
            let message = match stream.get_raw_message(seq).await {
                Ok(message) => message,
                // Deleted already (a gap), or a failure to report.
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => continue,
                Err(e) if out.is_empty() => return Err(nats("dead-letter read")(&e)),
                Err(_) => break,
            };
            let header = |name: &str| {
                message
                    .headers
                    .get(name)
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default()
            };
            let Some(payload) = decode(&message.payload) else {
                continue;
            };
            let id = header(ID).parse().unwrap_or(MessageId::work(0));
            let attempts = header(ATTEMPTS).parse().unwrap_or(0);
            let reason = match header(REASON).as_str() {
                "max_attempts" => DeadLetterReason::MaxAttempts,
                _ => DeadLetterReason::Rejected,
            };
            match stream.delete_message(seq).await {
                Ok(_) => out.push((id, attempts, reason, payload)),
                Err(e) if out.is_empty() => return Err(nats("dead-letter delete")(&e)),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Messages in a stream of this queue (`suffix`: "", "-delayed",
    /// "-dead").
    pub(crate) async fn stream_messages(&self, suffix: &str) -> Result<u64, NatsError> {
        let mut stream = self
            .js
            .get_stream(format!("{}{suffix}", self.name))
            .await
            .map_err(|e| nats("stream info")(&e))?;
        Ok(stream
            .info()
            .await
            .map_err(|e| nats("stream info")(&e))?
            .state
            .messages)
    }

    /// Messages of `produce_after` and `defer` not yet due: those in the
    /// delayed stream, and with schedules those of the work stream beyond
    /// the `on_work_subject` its consumer counts (pending and held).
    pub(crate) async fn delayed_messages(&self, on_work_subject: u64) -> Result<u64, NatsError> {
        let delayed = self.stream_messages("-delayed").await?;
        if !self.schedules {
            return Ok(delayed);
        }
        let scheduled = self
            .stream_messages("")
            .await?
            .saturating_sub(on_work_subject);
        Ok(delayed + scheduled)
    }

    /// The work consumer's pending (not yet delivered) and held (delivered,
    /// not acked: in flight or waiting for a delayed redelivery) counts.
    pub(crate) async fn consumer_counts(&self) -> Result<(u64, u64), NatsError> {
        let mut consumer = self.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| nats("consumer info")(&e))?;
        Ok((info.num_pending, info.num_ack_pending as u64))
    }
}
