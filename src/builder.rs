//! `Builder`: a queue's settings, checked.

use crate::backoff::Backoff;
use crate::error::BuildError;
use crate::manual_clock::ManualClock;
use crate::queue::Queue;
use crate::retry_budget::RetryBudget;
use crate::shared::{Config, MAX_LEASE};
use crate::state::MAX_ATTEMPTS;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// Configures a [`Queue`]. `T` is inferred from the binding.
///
/// ```
/// use rebound::{Backoff, Queue};
/// use std::time::Duration;
/// let q: Queue<String> = Queue::builder()
///     .lease(Duration::from_secs(5))
///     .backoff(Backoff::fixed(Duration::from_millis(250)).with_jitter(0.2))
///     .max_attempts(5)
///     .build();
/// # drop(q);
/// ```
pub struct Builder<T> {
    config: Config,
    clock: Option<ManualClock>,
    #[cfg(feature = "journal")]
    journal: Option<crate::journal::JournalConfig>,
    _payload: PhantomData<fn() -> T>,
}

impl<T: Send + Sync + 'static> Queue<T> {
    /// Starts configuring a queue.
    ///
    /// ```
    /// use rebound::{Backoff, Queue};
    /// use std::time::Duration;
    /// let q: Queue<u64> = Queue::builder()
    ///     .lease(Duration::from_secs(30))
    ///     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(10)))
    ///     .max_attempts(16)
    ///     .build();
    /// # drop(q);
    /// ```
    pub fn builder() -> Builder<T> {
        Builder {
            config: Config::default(),
            clock: None,
            #[cfg(feature = "journal")]
            journal: None,
            _payload: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("clock", &self.clock)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Builder<T> {
    /// How long a delivery stays valid without being settled or extended
    /// (the visibility timeout). Default 30 s. Range: 1 ms to about 199 days.
    ///
    /// ```
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().lease(std::time::Duration::from_secs(1)).build();
    /// # drop(q);
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// The delay before redelivering a failed message. Default
    /// `Backoff::exponential(100 ms, 30 s)`.
    ///
    /// ```
    /// use rebound::Backoff;
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().backoff(Backoff::fixed(std::time::Duration::ZERO)).build();
    /// # drop(q);
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How many deliveries a message gets before it is dead-lettered.
    /// Default 16. Range: 1 to 4095.
    ///
    /// ```
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().max_attempts(3).build();
    /// # drop(q);
    /// ```
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.config.max_attempts = max_attempts;
        self
    }

    /// Holds redeliveries (rollbacks and expired leases coming back) to
    /// `budget`: at most `max(min_per_sec, ratio × first deliveries per
    /// second)` per second, the rest postponed, never dropped (see
    /// [`RetryBudget`]). Default: none, every redelivery comes back when
    /// its backoff ends.
    ///
    /// ```
    /// use rebound::{Queue, RetryBudget};
    /// let q: Queue<String> = Queue::builder().retry_budget(RetryBudget::new(0.2, 10)).build();
    /// # drop(q);
    /// ```
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.config.retry_budget = Some(budget);
        self
    }

    /// Times the queue by `clock` instead of the real time: leases, delays,
    /// backoff, the retry budget and message timestamps move only when the
    /// clock is [advanced](ManualClock::advance). For tests. Blocking waits
    /// (`consume_timeout`) still measure real time. A journaled queue
    /// refuses it ([`BuildError::ManualClockJournal`]).
    ///
    /// ```
    /// use rebound::{ManualClock, Queue};
    /// use std::time::Duration;
    /// let clock = ManualClock::new();
    /// let q: Queue<u8> = Queue::builder().clock(clock.clone()).build();
    /// q.produce(1).unwrap();
    /// q.consume().unwrap().rollback_after(Duration::from_secs(60)).unwrap();
    /// assert!(q.consume_timeout(Duration::from_millis(20)).is_err());
    /// clock.advance(Duration::from_secs(60));
    /// assert_eq!(q.consume_timeout(Duration::from_secs(5)).unwrap().attempt(), 2);
    /// ```
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How long an id given to [`Queue::produce_with_id`] stays taken
    /// after its message was acked or dead-lettered, so that a producer's
    /// retry that comes late is still refused as a duplicate (JetStream's
    /// duplicate window). Default: zero, only ids of live messages (and of
    /// dead letters not drained yet) are taken. The window follows the
    /// queue's clock.
    ///
    /// ```
    /// use rebound::{MessageId, Queue};
    /// use std::time::Duration;
    /// let q = Queue::builder().dedup_window(Duration::from_secs(120)).build();
    /// let id = MessageId::from_key("order 7");
    /// q.produce_with_id(id, 7).unwrap();
    /// q.consume().unwrap().ack().unwrap();
    /// // Acked, but within two minutes: still a duplicate.
    /// assert!(q.produce_with_id(id, 7).unwrap_err().is_duplicate());
    /// ```
    pub fn dedup_window(mut self, window: Duration) -> Self {
        self.config.dedup_window = window;
        self
    }

    /// Whether a dead-lettered message of an ordered group holds its group
    /// ([`Queue::produce_in_group`]): with `true`, the group's later
    /// messages wait until the letter is [`redrive`](Queue::redrive)n (it
    /// is delivered again first) or the group is released with
    /// [`Queue::release_group`], as Service Bus sessions and SQS FIFO
    /// groups do. Default `false`: a dead letter releases its group. A held
    /// group's messages are still in the queue: consumers of a closed queue
    /// wait for them, so release or redrive before waiting for a drain.
    ///
    /// ```
    /// use rebound::Queue;
    /// let q: Queue<&str> = Queue::builder().hold_groups(true).build();
    /// q.produce_in_group("order-9", "paid").unwrap();
    /// q.produce_in_group("order-9", "shipped").unwrap();
    /// q.consume().unwrap().dead_letter().unwrap();
    /// assert!(q.try_consume().is_err()); // "shipped" waits for "paid"
    /// let letter = q.drain_dead_letters().pop().unwrap();
    /// q.redrive(letter).unwrap();
    /// let d = q.consume().unwrap();
    /// assert_eq!(*d, "paid");
    /// d.ack().unwrap();
    /// assert_eq!(*q.consume().unwrap(), "shipped");
    /// ```
    pub fn hold_groups(mut self, hold: bool) -> Self {
        self.config.hold_groups = hold;
        self
    }

    /// Builds the queue, checking every setting.
    ///
    /// # Errors
    /// [`BuildError`] naming the first setting out of range, or
    /// [`BuildError::Spawn`] if the redeliverer thread could not start.
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = rebound::Queue::<u8>::builder().lease(Duration::ZERO).try_build().unwrap_err();
    /// assert!(err.to_string().contains("lease"));
    /// ```
    pub fn try_build(self) -> Result<Queue<T>, BuildError> {
        // A journal directory given: `open`, not `build`. (`durability`
        // and the like without one configure nothing.)
        #[cfg(feature = "journal")]
        if self
            .journal
            .as_ref()
            .is_some_and(|j| !j.dir.as_os_str().is_empty())
        {
            return Err(BuildError::JournalNeedsOpen);
        }
        self.check()?;
        Queue::with_config(self.config, self.clock)
    }

    /// The settings, checked.
    fn check(&self) -> Result<(), BuildError> {
        let Config {
            lease,
            max_attempts,
            retry_budget,
            ..
        } = self.config;
        if retry_budget.is_some_and(|budget| !budget.is_valid()) {
            return Err(BuildError::RetryBudgetRatio);
        }
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(BuildError::MaxAttempts {
                given: max_attempts,
                limit: MAX_ATTEMPTS,
            });
        }
        if lease < Duration::from_millis(1) || lease > MAX_LEASE {
            return Err(BuildError::Lease {
                given: lease,
                limit: MAX_LEASE,
            });
        }
        Ok(())
    }

    /// Builds the queue, bringing settings out of range to the nearest valid
    /// value (`max_attempts` 0 becomes 1; a zero lease becomes 1 ms; a
    /// retry budget's negative or NaN ratio becomes 0, an infinite one 0
    /// too: use no budget for no limit).
    ///
    /// # Panics
    /// If the operating system refuses to start the redeliverer thread; use
    /// [`Self::try_build`] to get that as an error.
    ///
    /// ```
    /// let q: rebound::Queue<u8> = rebound::Queue::builder().max_attempts(0).build();
    /// q.produce(1).unwrap();
    /// q.consume().unwrap().rollback().unwrap();
    /// assert_eq!(q.drain_dead_letters()[0].attempts(), 1);
    /// ```
    pub fn build(mut self) -> Queue<T> {
        self.config.max_attempts = self.config.max_attempts.clamp(1, MAX_ATTEMPTS);
        self.config.lease = self.config.lease.clamp(Duration::from_millis(1), MAX_LEASE);
        self.config.retry_budget = self.config.retry_budget.map(RetryBudget::clamped);
        match self.try_build() {
            Ok(queue) => queue,
            Err(e) => panic!("rebound: {e}"),
        }
    }
}

#[cfg(feature = "journal")]
impl<T: Send + Sync + 'static> Builder<T> {
    /// Journals the queue in directory `dir` (created if missing, owner
    /// only): every produce, claim and settle is recorded before it
    /// returns, so a crash of the process loses nothing, and
    /// [`Self::open`] brings everything back. One live queue per directory.
    /// See docs/durability.md.
    ///
    /// ```
    /// use rebound::Queue;
    /// let dir = std::env::temp_dir().join(format!("rebound-doc-journal-{}", std::process::id()));
    /// let q: Queue<String> = Queue::builder().max_attempts(5).journal(&dir).open().unwrap();
    /// let id = q.produce("job".to_string()).unwrap();
    /// drop(q); // or a crash: `kill -9`, an abort, a power cut with `Durability::Fsync`
    ///
    /// let q: Queue<String> = Queue::builder().max_attempts(5).journal(&dir).open().unwrap();
    /// assert_eq!(q.recovery().unwrap().pending, 1);
    /// let d = q.consume().unwrap();
    /// assert_eq!((d.id(), d.attempt(), d.as_str()), (id, 1, "job"));
    /// d.ack().unwrap();
    /// # drop(q);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn journal(mut self, dir: impl AsRef<std::path::Path>) -> Self {
        let old = self.journal.take();
        let mut config = crate::journal::JournalConfig::new(dir.as_ref().to_path_buf());
        if let Some(old) = old {
            config.durability = old.durability;
            config.repair = old.repair;
            config.segment_bytes = old.segment_bytes;
        }
        self.journal = Some(config);
        self
    }

    /// When the journal's records are forced to disk; default
    /// [`Durability::Buffered`](crate::Durability::Buffered). Only meaningful with [`Self::journal`].
    ///
    /// ```
    /// use rebound::{Durability, Queue};
    /// let dir = std::env::temp_dir().join(format!("rebound-doc-dur-{}", std::process::id()));
    /// let q: Queue<Vec<u8>> = Queue::builder().journal(&dir).durability(Durability::Fsync).open().unwrap();
    /// # drop(q);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn durability(mut self, durability: crate::Durability) -> Self {
        self.journal_config().durability = durability;
        self
    }

    /// Opens a damaged journal anyway: the journal is cut at the first
    /// damaged record (everything after it is discarded and counted in
    /// [`Recovery::bytes_discarded`](crate::Recovery::bytes_discarded))
    /// instead of [`OpenError::Corrupt`](crate::OpenError::Corrupt). What
    /// was cut is lost: acked messages may come back, produced ones may be
    /// gone. Default off.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("rebound-doc-repair-{}", std::process::id()));
    /// let q: rebound::Queue<Vec<u8>> = rebound::Queue::builder().journal(&dir).repair(true).open().unwrap();
    /// # drop(q);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn repair(mut self, repair: bool) -> Self {
        self.journal_config().repair = repair;
        self
    }

    /// Bytes per journal segment file (default 8 MiB; rounded up to 4 KiB,
    /// at least 64 KiB). A record larger than a segment gets a segment of
    /// its own.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("rebound-doc-seg-{}", std::process::id()));
    /// let q: rebound::Queue<Vec<u8>> = rebound::Queue::builder()
    ///     .journal(&dir)
    ///     .segment_size(1 << 20)
    ///     .open()
    ///     .unwrap();
    /// # drop(q);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn segment_size(mut self, bytes: usize) -> Self {
        self.journal_config().segment_bytes = bytes.clamp(64 << 10, 1 << 30).next_multiple_of(4096);
        self
    }

    fn journal_config(&mut self) -> &mut crate::journal::JournalConfig {
        self.journal
            .get_or_insert_with(|| crate::journal::JournalConfig::new(std::path::PathBuf::new()))
    }

    /// Opens the journaled queue: reads the journal, puts back every
    /// message it holds (see [`Recovery`](crate::Recovery)), and starts the
    /// queue's threads.
    ///
    /// # Errors
    /// [`OpenError`](crate::OpenError): no journal directory was given
    /// ([`Self::journal`]), a setting is out of range, a
    /// [`ManualClock`] was given ([`BuildError::ManualClockJournal`]), the directory is held
    /// by another live queue, an I/O error, or a damaged journal.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join(format!("rebound-doc-open-{}", std::process::id()));
    /// let q: rebound::Queue<String> = rebound::Queue::builder().journal(&dir).open().unwrap();
    /// assert_eq!(q.recovery().unwrap().records, 0);
    /// # drop(q);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open(self) -> Result<Queue<T>, crate::OpenError>
    where
        T: crate::Payload,
    {
        self.check()?;
        if self.clock.is_some() {
            return Err(crate::OpenError::Build(BuildError::ManualClockJournal));
        }
        match self.journal {
            Some(journal) if !journal.dir.as_os_str().is_empty() => {
                crate::journal::open(self.config, journal)
            }
            _ => Err(crate::OpenError::Build(BuildError::JournalNeedsOpen)),
        }
    }
}
