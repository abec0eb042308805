//! `Delivery`: one claim on one JetStream message, and the ways to settle
//! it.

use crate::id::MessageId;
use crate::jetstream::{self, Counters, Inner};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::message::Message;
use async_nats::{Client, Subject};
use rebound::{LeaseExpired, Settle};
use std::fmt;
use std::future::{Future, poll_fn};
use std::ops::Deref;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A claim on one message of a JetStream [`Queue`](crate::Queue), valid
/// until its lease ends.
///
/// Dereferences to the message. Settle it with [`ack`](Self::ack),
/// [`rollback`](Self::rollback), [`rollback_after`](Self::rollback_after)
/// or [`dead_letter`](Self::dead_letter); dropping it unsettled rolls it
/// back.
///
/// Its rights end a safety margin (the builder's
/// [`fence_margin`](crate::Builder::fence_margin)) before the server's
/// `AckWait` would: after that every settle returns [`LeaseExpired`] and
/// sends nothing, so a holder never acks a message the server may already
/// have redelivered (see the README's guarantees for what this does and
/// does not cover).
///
/// ```no_run
/// use rebound_nats::Queue;
/// let q: Queue<String> = Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
/// q.produce("resize image 42".into()).unwrap();
/// let d = q.consume().unwrap();
/// assert!(d.starts_with("resize"));
/// assert_eq!(d.attempt(), 1);
/// d.ack().unwrap();
/// ```
#[must_use = "dropping a Delivery unsettled rolls the message back"]
pub struct Delivery<T> {
    inner: Arc<Inner>,
    /// `None` once settled.
    message: Option<Message>,
    value: T,
    id: MessageId,
    attempt: u32,
    /// When the message was received; the lease runs from here.
    received: Instant,
    /// When its rights end, shared with its keep-alive task (if any).
    rights: Arc<Rights>,
}

/// What a delivery shares with the task that keeps its lease alive
/// ([`Settle::keep_alive`]).
struct Rights {
    /// When the delivery's rights end, in nanoseconds after it was
    /// received. Only grows.
    deadline: AtomicU64,
    /// Whether a keep-alive task may still send `+WPI`: `false` once the
    /// delivery is settled (or dropped) or the guard is dropped. The task
    /// holds the lock from its look at it through handing the `+WPI` to
    /// the connection and moving `deadline`, so a settle, which clears it
    /// first, is sent after every `+WPI` (one behind a delayed `-NAK` would
    /// restart the server's `AckWait` in place of the delay) and sees every
    /// move of the deadline.
    open: Mutex<bool>,
}

impl Rights {
    fn open(&self) -> MutexGuard<'_, bool> {
        // Nothing panics while holding it.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No `+WPI` from now on.
    fn close(&self) {
        *self.open() = false;
    }
}

impl<T> Delivery<T> {
    pub(crate) fn new(
        inner: Arc<Inner>,
        message: Message,
        value: T,
        id: MessageId,
        attempt: u32,
        received: Instant,
    ) -> Self {
        let rights = inner.settings.lease - inner.settings.margin;
        Self {
            inner,
            message: Some(message),
            value,
            id,
            attempt,
            received,
            rights: Arc::new(Rights {
                deadline: AtomicU64::new(nanos(rights)),
                open: Mutex::new(true),
            }),
        }
    }

    /// The message's id, the same on every delivery of it.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// let id = q.produce("x".into()).unwrap();
    /// assert_eq!(q.consume().unwrap().id(), id);
    /// ```
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// Which delivery of the message this is: 1 the first time, then one
    /// more for each redelivery, whatever caused it (the server's delivery
    /// count).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().rollback_after(std::time::Duration::ZERO).unwrap();
    /// assert_eq!(q.consume().unwrap().attempt(), 2);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this delivery's rights last: its lease, less the safety
    /// margin, has not run out.
    fn live(&self) -> bool {
        // Relaxed: the deadline only grows; a stale read is an earlier
        // deadline, which can only refuse a settle, never let a stale one
        // through. A keep-alive task moves it under `Rights::open`, which
        // `take` locks first: a settle sees every move made before.
        let deadline = self.rights.deadline.load(Ordering::Relaxed);
        nanos(self.received.elapsed()) < deadline
    }

    /// Takes the message to settle it, if this delivery's rights last.
    fn take(&mut self) -> Result<Message, LeaseExpired> {
        let message = self.message.take().ok_or(LeaseExpired)?;
        self.rights.close();
        if self.live() {
            Ok(message)
        } else {
            Err(LeaseExpired)
        }
    }

    /// The message is done: it is removed from the work stream.
    ///
    /// `Ok` means the `+ACK` was handed to this handle's connection, behind
    /// every settle made before it through this handle, without waiting for
    /// the server (which confirms no acknowledgement of a pull consumer):
    /// the connection writes it out at once, and
    /// [`Queue::close`](crate::Queue::close) and
    /// dropping the last handle wait until it has been written. The other
    /// settles are sent the same way.
    ///
    /// # Errors
    /// [`LeaseExpired`] if the delivery's rights had ended (nothing is
    /// sent; the server redelivers the message), or if the ack could not be
    /// sent (the connection is closed; the server redelivers it after its
    /// `AckWait`).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().ack().unwrap();
    /// ```
    pub fn ack(mut self) -> Result<(), LeaseExpired> {
        let message = self.take()?;
        self.send(&message, AckKind::Ack)?;
        Counters::add(&self.inner.counters.acked, 1);
        Ok(())
    }

    /// Try again later: redelivered after the queue's backoff for this
    /// attempt (a negative acknowledgement with that delay), or
    /// dead-lettered if this was its last attempt.
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().rollback().unwrap();
    /// ```
    pub fn rollback(mut self) -> Result<(), LeaseExpired> {
        self.rollback_with(None)
    }

    /// Try again after `delay` (instead of the backoff), or dead-letter if
    /// this was the last attempt. Never redelivered before `delay` has
    /// passed: the server holds the message back for it.
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// q.consume().unwrap().rollback_after(std::time::Duration::from_secs(5)).unwrap();
    /// ```
    pub fn rollback_after(mut self, delay: Duration) -> Result<(), LeaseExpired> {
        self.rollback_with(Some(delay))
    }

    /// Not now: the message comes back after `delay` with the same
    /// [`attempt`](Self::attempt), and the defer never dead-letters (see
    /// `rebound::Delivery::defer`). On JetStream a copy (keeping the id and
    /// the attempts used before) goes in as a schedule (nats-server 2.12
    /// and later) or to the delayed stream (older servers), as for
    /// `Queue::produce_after`, and this delivery is acked; a crash between
    /// the two delivers the message twice, never loses it.
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack) (also if the copy could not
    /// be published: the message then comes back after `AckWait`, as an
    /// expiry).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("later".into()).unwrap();
    /// let d = q.consume().unwrap();
    /// d.defer(std::time::Duration::from_secs(5)).unwrap();
    /// assert_eq!(q.consume().unwrap().attempt(), 1); // five seconds later
    /// ```
    pub fn defer(mut self, delay: Duration) -> Result<(), LeaseExpired> {
        let message = self.take()?;
        let inner = &self.inner;
        let due = jetstream::unix_nanos().saturating_add(nanos(delay));
        inner
            .runtime
            .block_on(inner.defer(&message, self.id, self.attempt, due))
            .map_err(|_| LeaseExpired)?;
        self.send(&message, AckKind::Ack)?;
        Counters::add(&inner.counters.deferred, 1);
        Ok(())
    }

    /// Give up now: the message goes to the dead-letter stream with reason
    /// [`Rejected`](rebound::DeadLetterReason::Rejected).
    ///
    /// # Errors
    /// [`LeaseExpired`], as [`ack`](Self::ack) (also if the dead-letter
    /// stream did not confirm the letter: the message stays in the work
    /// stream and comes back).
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("malformed".into()).unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// ```
    pub fn dead_letter(mut self) -> Result<(), LeaseExpired> {
        let message = self.take()?;
        self.park(&message, "rejected")
    }

    /// Still working on it: asks the server for a new full `AckWait` (a
    /// `+WPI`), and this delivery's rights now end `extension` from now,
    /// at most the lease less the safety margin from now (JetStream extends
    /// by the whole `AckWait`, whatever is asked), unless they already
    /// ended later.
    ///
    /// # Errors
    /// [`LeaseExpired`] if the rights had ended, or the request could not
    /// be sent.
    ///
    /// ```no_run
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("x".into()).unwrap();
    /// let d = q.consume().unwrap();
    /// d.extend_lease(std::time::Duration::from_secs(30)).unwrap();
    /// d.ack().unwrap();
    /// ```
    pub fn extend_lease(&self, extension: Duration) -> Result<(), LeaseExpired> {
        let message = self.message.as_ref().ok_or(LeaseExpired)?;
        if !self.live() {
            return Err(LeaseExpired);
        }
        // The new rights start before the request is sent: the server's
        // new AckWait starts after it.
        let start = self.received.elapsed();
        self.send(message, AckKind::Progress)?;
        let settings = &self.inner.settings;
        let rights = extension.min(settings.lease - settings.margin);
        // Relaxed: see `live`.
        self.rights
            .deadline
            .fetch_max(nanos(start + rights), Ordering::Relaxed);
        Ok(())
    }

    fn rollback_with(&mut self, delay: Option<Duration>) -> Result<(), LeaseExpired> {
        let message = self.take()?;
        let settings = &self.inner.settings;
        if self.attempt >= settings.max_attempts {
            return self.park(&message, "max_attempts");
        }
        let delay = delay.unwrap_or_else(|| settings.backoff.delay(self.attempt));
        self.send(&message, AckKind::Nak(Some(delay)))?;
        Counters::add(&self.inner.counters.rolled_back, 1);
        Ok(())
    }

    /// Moves the message to the dead letters.
    fn park(&self, message: &Message, reason: &str) -> Result<(), LeaseExpired> {
        let inner = &self.inner;
        inner
            .runtime
            .block_on(inner.dead_letter(message, self.id, self.attempt, reason))
            .map_err(|_| LeaseExpired)
    }

    fn send(&self, message: &Message, kind: AckKind) -> Result<(), LeaseExpired> {
        self.inner.send_ack(message, kind).map_err(|_| LeaseExpired)
    }

    /// Starts the task of [`Settle::keep_alive`] on the queue's runtime.
    fn keep_alive(
        &self,
        max: Duration,
        extended: Arc<dyn Fn() + Send + Sync>,
    ) -> Option<KeepAlive> {
        let message = self.message.as_ref()?;
        let reply = message.reply.clone()?;
        if !self.live() {
            return None;
        }
        let settings = &self.inner.settings;
        let rights = nanos(settings.lease - settings.margin);
        // One lease of rights from now, and `max` beyond it.
        let cap = nanos(self.received.elapsed())
            .saturating_add(rights)
            .saturating_add(nanos(max));
        let keeper = Keeper {
            rights: Arc::clone(&self.rights),
            client: message.context.client(),
            reply,
            received: self.received,
            lease: rights,
            cap,
            extended,
        };
        Some(KeepAlive {
            rights: Arc::clone(&self.rights),
            task: self.inner.runtime.spawn(keeper.run()),
        })
    }
}

/// The guard of [`Settle::keep_alive`]: the task stops when it drops.
struct KeepAlive {
    rights: Arc<Rights>,
    task: JoinHandle<()>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        // After this, the task sends nothing more (see `Rights::open`).
        self.rights.close();
        self.task.abort();
    }
}

/// The keep-alive task of one delivery: what it needs to send `+WPI`
/// without the delivery, which its handler holds.
struct Keeper {
    rights: Arc<Rights>,
    client: Client,
    reply: Subject,
    received: Instant,
    /// The rights one `+WPI` gives (the lease less the fence margin), ns.
    lease: u64,
    /// The latest the rights may be moved to, ns after `received`.
    cap: u64,
    extended: Arc<dyn Fn() + Send + Sync>,
}

impl Keeper {
    /// Nanoseconds since the message was received.
    fn now(&self) -> u64 {
        nanos(self.received.elapsed())
    }

    /// Halfway through what is left of the rights, sends `+WPI` and moves
    /// the deadline to the lease less the margin from before the send (at
    /// most to the cap), until the cap is reached, the rights end, or the
    /// delivery is settled or its guard dropped.
    async fn run(self) {
        loop {
            let now = self.now();
            // Relaxed: only this task and `extend_lease` move it; a stale
            // (earlier) value makes the next extension come earlier.
            let deadline = self.rights.deadline.load(Ordering::Relaxed);
            if now >= deadline || deadline >= self.cap {
                return;
            }
            tokio::time::sleep(Duration::from_nanos((deadline - now) / 2)).await;
            let mut send = pin!(
                self.client
                    .publish(self.reply.clone(), AckKind::Progress.into())
            );
            let extended = poll_fn(|cx| {
                let open = self.rights.open();
                if !*open {
                    return Poll::Ready(false);
                }
                // The new rights start before the request is sent: the
                // server's new AckWait starts after it.
                let now = self.now();
                // Relaxed: see above; `open` orders it with the settles.
                let deadline = self.rights.deadline.load(Ordering::Relaxed);
                let target = now.saturating_add(self.lease).min(self.cap);
                if now >= deadline || target <= deadline {
                    return Poll::Ready(false);
                }
                match send.as_mut().poll(cx) {
                    // A pending send has not reserved its place: dropped
                    // unsent if the delivery is settled meanwhile.
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(_)) => Poll::Ready(false),
                    Poll::Ready(Ok(())) => {
                        // Relaxed: see `Delivery::live`.
                        self.rights.deadline.fetch_max(target, Ordering::Relaxed);
                        // Under the lock: counted before the guard's drop
                        // returns.
                        (self.extended)();
                        Poll::Ready(true)
                    }
                }
            })
            .await;
            if !extended {
                return;
            }
        }
    }
}

/// A duration in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl<T> Deref for Delivery<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Drop for Delivery<T> {
    fn drop(&mut self) {
        if self.message.is_some() {
            // Refused if the rights had ended: the server redelivers it.
            let _ = self.rollback_with(None);
        }
    }
}

impl<T> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl<T> Settle for Delivery<T> {
    fn attempt(&self) -> u32 {
        Delivery::attempt(self)
    }

    fn ack(self) -> Result<(), LeaseExpired> {
        Delivery::ack(self)
    }

    fn rollback(self) -> Result<(), LeaseExpired> {
        Delivery::rollback(self)
    }

    fn rollback_after(self, delay: Duration) -> Result<(), LeaseExpired> {
        Delivery::rollback_after(self, delay)
    }

    fn dead_letter(self) -> Result<(), LeaseExpired> {
        Delivery::dead_letter(self)
    }

    fn defer(self, delay: Duration) -> Result<(), LeaseExpired> {
        Delivery::defer(self, delay)
    }

    fn extend_lease(&self, extension: Duration) -> Result<(), LeaseExpired> {
        Delivery::extend_lease(self, extension)
    }

    /// A task on the queue's runtime sends `+WPI` (a new full `AckWait`)
    /// halfway through what is left of this delivery's rights, and moves
    /// them to the lease less the fence margin from before the send, at
    /// most `max` beyond one such lease from now: after that the rights
    /// end, and the server redelivers the message once its last `AckWait`
    /// runs out. The task stops when the guard drops or the delivery is
    /// settled; no `+WPI` follows a settle. `None` if the rights have
    /// ended.
    ///
    /// ```no_run
    /// use rebound::Settle;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// # let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
    /// q.produce("long".into()).unwrap();
    /// let d = q.consume().unwrap();
    /// let guard = d.keep_alive(Duration::from_secs(600), Arc::new(|| ())).unwrap();
    /// std::thread::sleep(Duration::from_secs(60)); // longer than the lease
    /// drop(guard);
    /// d.ack().unwrap();
    /// ```
    fn keep_alive(
        &self,
        max: Duration,
        extended: Arc<dyn Fn() + Send + Sync>,
    ) -> Option<Box<dyn Send>> {
        Delivery::keep_alive(self, max, extended).map(|guard| Box::new(guard) as Box<dyn Send>)
    }
}
