//! `Stats`: what this handle did, and what the server holds.

/// What a queue handle (and its clones) did, and what the server holds for
/// the queue now (across every process). See
/// [`Queue::stats`](crate::Queue::stats).
///
/// ```no_run
/// let q: rebound_nats::Queue<String> = rebound_nats::Queue::builder("nats://127.0.0.1:4222", "jobs").connect().unwrap();
/// q.produce("a".into()).unwrap();
/// let s = q.stats().unwrap();
/// assert_eq!((s.produced, s.ready), (1, 1));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Messages this handle produced (confirmed by the server).
    pub produced: u64,
    /// Deliveries this handle handed out.
    pub delivered: u64,
    /// Acks this handle sent.
    pub acked: u64,
    /// Rollbacks this handle sent (explicit or by drop).
    pub rolled_back: u64,
    /// Defers this handle made.
    pub deferred: u64,
    /// Messages this handle moved to the dead letters.
    pub dead_lettered: u64,
    /// Server: messages in the work stream not delivered yet.
    pub ready: u64,
    /// Server: messages of `produce_after` not yet due (or not yet moved).
    pub delayed: u64,
    /// Server: messages delivered and not acked: held by a delivery in some
    /// process, or rolled back and waiting for their redelivery.
    pub in_flight: u64,
    /// Server: dead letters not drained yet.
    pub dead_letters: u64,
}
