//! `Shared`: the state every handle, delivery, block and the redeliverer
//! share, the queue's `Config`, and what a settle does with the payload.

use crate::backoff::Backoff;
use crate::batch::MessageRef;
use crate::block::Block;
use crate::block_pool::{BlockPool, REGISTER_WAKE};
use crate::clock::{self, Clock, Recent};
use crate::dead_letter::{DeadLetter, DeadLetterReason};
use crate::dedup::Dedup;
use crate::groups::GroupKey;
use crate::groups::Groups;
use crate::id::MessageId;
use crate::inbox::Inbox;
use crate::index::Index;
use crate::manual_clock::{Advanced, ManualClock};
use crate::retry_budget::RetryBudget;
use crate::state::{Discard, Fate, MAX_TICK_SPAN, PayloadFate, TICK_MASK, Tag, tick_reached};
use crate::stats::{Counter, Counters, Stats};
use crate::sync::{
    Arc, AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Mutex, Ordering, lock, thread,
};
use crate::waiters::Waiters;
use std::time::Duration;

/// Leases shorter than this are timed from a precise clock reading (see
/// `Shared::claim_deadline`), as are all leases under a manual clock.
const SHORT_LEASE: Duration = Duration::from_secs(1);

/// The longest lease (and lease extension) the state word can represent.
pub(crate) const MAX_LEASE: Duration = Duration::from_millis(MAX_TICK_SPAN / 2);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub(crate) lease: Duration,
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    /// How long an id given to `produce_with_id` stays taken after its
    /// message was acked or dead-lettered.
    pub(crate) dedup_window: Duration,
    pub(crate) retry_budget: Option<RetryBudget>,
    /// Whether a group's dead-lettered head holds its group
    /// (`Builder::hold_groups`).
    pub(crate) hold_groups: bool,
    /// Whether every lease is timed from a precise reading: leases under
    /// [`SHORT_LEASE`], and every lease under a manual clock, whose recent
    /// reading never lags it. Derived when the queue is made
    /// (`Shared::with_journal`); here, beside `lease`, because every claim
    /// reads both.
    pub(crate) precise_leases: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            lease: Duration::from_secs(30),
            backoff: Backoff::default(),
            max_attempts: 16,
            dedup_window: Duration::ZERO,
            retry_budget: None,
            hold_groups: false,
            precise_leases: false,
        }
    }
}

/// The redeliverer thread, which hands back the blocks it watched.
pub(crate) type RedelivererThread<T> = thread::JoinHandle<Vec<Arc<Block<T>>>>;

/// `Shared::head_gone`: a group's head in `slot` of a block, of group
/// `key`, left the queue (acked, or dead if the flag says so).
type HeadGone<T> = fn(&Arc<Shared<T>>, &Block<T>, usize, u64, bool);

/// Everything the handles, deliveries, blocks and the redeliverer share.
pub(crate) struct Shared<T> {
    pub(crate) config: Config,
    /// Timestamps (nanoseconds since the queue's origin) and lease ticks.
    pub(crate) clock: Clock,
    /// High half of every message id of this queue.
    nonce: u64,
    pub(crate) index: Index<T>,
    /// The open block that immediate messages are appended to: a strong
    /// reference made raw with `Arc::into_raw`, replaced only by the producer
    /// that filled it, and released through the epoch so that a producer
    /// that loaded it while pinned can still use it.
    pub(crate) tail: AtomicPtr<Block<T>>,
    /// Sequence numbers for index keys and message ids.
    next_seq: AtomicU64,
    closed: AtomicBool,
    /// Set by `close_due`: consumers of the closed queue do not wait for
    /// messages that are not due yet. Set before `closed`, never unset.
    skip_delayed: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) waiters: Waiters,
    pub(crate) inbox: Inbox<T>,
    /// New blocks on their way to the redeliverer, and dead ones kept for
    /// reuse.
    pub(crate) blocks: BlockPool<T>,
    /// `None` once the queue is torn down.
    pub(crate) dead_letters: Mutex<Option<Vec<DeadLetter<T>>>>,
    /// The ids given to `produce_with_id` (and redriven) that are taken.
    pub(crate) dedup: Dedup,
    /// Ordered groups: each group's tail, hold and start time.
    pub(crate) groups: Groups<T>,
    /// `Shared::head_gone`, captured where its bounds are known, so that
    /// the unbounded `release_payload` can hand a group to its next head.
    head_gone: HeadGone<T>,
    /// Live `Queue` handles; the last one tears the queue down.
    pub(crate) handles: AtomicUsize,
    /// `None` in the loom world, where the model runs the passes.
    pub(crate) redeliverer: Mutex<Option<RedelivererThread<T>>>,
    /// `teardown::<T>`, captured where its bounds are known, so that the
    /// unbounded `Drop for Queue<T>` can call it.
    pub(crate) teardown: fn(&Shared<T>),
    /// The journal of a queue opened with `Builder::open`, and how its
    /// payloads are encoded.
    #[cfg(feature = "journal")]
    pub(crate) journal: Option<crate::journal::Attached<T>>,
}

impl<T> Shared<T> {
    /// The state of a new queue, with no tail block yet (see
    /// `Shared::open_first_block`). `teardown` is what the last handle runs.
    pub(crate) fn new(
        config: Config,
        clock: Option<ManualClock>,
        teardown: fn(&Shared<T>),
    ) -> Arc<Self>
    where
        T: Send + Sync + 'static,
    {
        Self::with_journal(
            config,
            clock,
            teardown,
            #[cfg(feature = "journal")]
            None,
        )
    }

    /// [`Self::new`], journaled when `journal` is set.
    pub(crate) fn with_journal(
        config: Config,
        manual: Option<ManualClock>,
        teardown: fn(&Shared<T>),
        #[cfg(feature = "journal")] journal: Option<crate::journal::Attached<T>>,
    ) -> Arc<Self>
    where
        T: Send + Sync + 'static,
    {
        let nonce = uuid::Uuid::new_v4().as_u64_pair().0;
        let minter = MessageId::new(nonce, 0).minter().unwrap_or(nonce);
        let config = Config {
            precise_leases: config.lease < SHORT_LEASE || manual.is_some(),
            ..config
        };
        Arc::new(Shared {
            config,
            clock: Clock::new(config.lease, manual),
            nonce,
            dedup: Dedup::new(clock::add(0, config.dedup_window), minter),
            groups: Groups::new(),
            head_gone: Self::head_gone,
            index: Index::new(),
            tail: AtomicPtr::new(std::ptr::null_mut()),
            next_seq: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            skip_delayed: AtomicBool::new(false),
            counters: Counters::new(),
            waiters: Waiters::new(),
            inbox: Inbox::new(),
            blocks: BlockPool::new(),
            dead_letters: Mutex::new(Some(Vec::new())),
            handles: AtomicUsize::new(1),
            redeliverer: Mutex::new(None),
            teardown,
            #[cfg(feature = "journal")]
            journal,
        })
    }

    /// Tells the redeliverer about a new block whose leases it must watch,
    /// waking it once [`REGISTER_WAKE`] blocks wait.
    pub(crate) fn register(&self, block: Arc<Block<T>>) {
        if self.blocks.register(block) == REGISTER_WAKE {
            self.inbox.wake_idle();
        }
    }

    /// Closes the queue (see `Queue::close`); with `skip_delayed`, as
    /// `Queue::close_due` does.
    pub(crate) fn close(&self, skip_delayed: bool) {
        if skip_delayed {
            self.skip_delayed.store(true, Ordering::SeqCst);
        }
        self.closed.store(true, Ordering::SeqCst);
        self.waiters.notify(true);
    }

    /// Whether `close_due` was called.
    pub(crate) fn skips_delayed(&self) -> bool {
        self.skip_delayed.load(Ordering::SeqCst)
    }

    /// Drives this queue by its manual clock, if it has one, until the
    /// last handle's teardown ([`Self::detach_clock`]).
    pub(crate) fn attach_clock(this: &Arc<Self>)
    where
        T: Send + Sync + 'static,
    {
        if let Some(manual) = &this.clock.manual {
            manual.attach(this.address(), Box::new(Arc::clone(this)));
        }
    }

    /// Stops the manual clock driving this queue (teardown).
    pub(crate) fn detach_clock(&self) {
        if let Some(manual) = &self.clock.manual {
            manual.detach(self.address());
        }
    }

    /// This state's address: who it is to its manual clock.
    fn address(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// A recent time (see [`Clock`]), restarting the clock upkeep if needed.
    pub(crate) fn recent_ns(&self) -> u64 {
        match self.clock.recent() {
            Recent::Fresh(nanos) => nanos,
            Recent::Restarted(nanos) => {
                self.inbox.kick();
                nanos
            }
        }
    }

    /// The wrapping tick at which a lease of `lease` taken at `now_ns` ends,
    /// rounded up so it never ends early.
    pub(crate) fn deadline_tick(&self, now_ns: u64, lease: Duration) -> u64 {
        clock::tick_ceil(clock::add(now_ns, lease.min(MAX_LEASE))) & TICK_MASK
    }

    /// The lease deadline of a claim made now, given the time `now_ns` the
    /// claim was polled at and whether it was a precise reading. A recent
    /// reading lags the real time by up to about an upkeep interval, which
    /// would shorten the lease by as much: short leases (under
    /// [`SHORT_LEASE`]) are timed from a precise reading instead, long ones
    /// get the interval added.
    pub(crate) fn claim_deadline(&self, now_ns: u64, precise: bool) -> u64 {
        let lease = self.config.lease;
        let from = if precise {
            now_ns
        } else if self.config.precise_leases {
            self.clock.precise()
        } else {
            clock::add(now_ns, clock::RECENT_MAX_AGE)
        };
        self.deadline_tick(from, lease)
    }

    /// Extra ticks the lease ending at wrapping tick `deadline` lasts
    /// because the recent reading it was timed from stood too long (see
    /// `clock::Lags`), at `now_ns`. Leases under [`SHORT_LEASE`] are timed
    /// from precise readings, and a deadline not reached yet needs no grace
    /// yet: none.
    pub(crate) fn grace_ticks(&self, deadline: u64, now_ns: u64) -> u64 {
        let lease = self.config.lease;
        let now_tick = clock::tick_floor(now_ns);
        if self.config.precise_leases || !tick_reached(deadline, now_tick & TICK_MASK) {
            return 0;
        }
        let behind = (now_tick & TICK_MASK).wrapping_sub(deadline) & TICK_MASK;
        let deadline_ns = clock::tick_nanos(now_tick.saturating_sub(behind));
        self.clock.grace_ticks(deadline_ns, lease)
    }

    /// A new id for a grouped message, minted before it has a slot.
    pub(crate) fn mint_grouped(&self) -> MessageId {
        MessageId::new(self.nonce, self.groups.next_number(self.nonce))
    }

    pub(crate) fn message_id(&self, block: &Block<T>, slot: usize) -> MessageId {
        match block.ids.get(slot) {
            None => MessageId::new(self.nonce, block.message_number(slot)),
            Some(id) => id,
        }
    }

    pub(crate) fn next_seq(&self) -> u64 {
        // Relaxed: only hands out distinct numbers.
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// After a settle: a consumer blocked on a closed queue may be waiting
    /// for the last in-flight message to finish.
    pub(crate) fn settled(&self) {
        // The settle's counter increment, then `closed` (both SeqCst).
        crate::sync::seq_cst_accesses();
        if self.is_closed() {
            self.waiters.notify(true);
        }
    }

    /// Counts a holder's settle (`acked` or `dead_lettered`).
    ///
    /// While the queue is open nobody waits for settles, so it is a plain
    /// store on this thread's counter stripe: a locked increment here would
    /// cost a noticeable share of the one-consumer rate. Once the queue is closed, consumers
    /// blocked in `consume` wait for the last settle: it is then a SeqCst
    /// increment followed by a wake-up (the close protocol, see
    /// [`Queue::close`](crate::Queue::close)). A settle that saw the queue open just before it
    /// closed may go unseen by a consumer checking at that moment; such a
    /// consumer parks for at most `wait::CLOSED_RECHECK` before it looks again.
    pub(crate) fn count_settle(&self, counter: Counter) {
        if self.is_closed() {
            self.counters.add(counter, 1);
            self.settled();
        } else {
            self.counters.add_release(counter, 1);
        }
    }

    /// Carries out what a holder that let go must do with the payload,
    /// spending the token its transition handed it.
    #[inline]
    pub(crate) fn release_payload(&self, block: &Block<T>, slot: usize, fate: PayloadFate) {
        self.release_payload_of(block, slot, fate, || block.ids.any());
    }

    /// [`Self::release_payload`], for a caller that already knows whether
    /// the block has an id table (`own`): a settle looks once, for both.
    #[inline]
    pub(crate) fn release_payload_of(
        &self,
        block: &Block<T>,
        slot: usize,
        fate: PayloadFate,
        own: impl FnOnce() -> bool,
    ) {
        match fate.into_fate() {
            Fate::Keep => {}
            Fate::Drop => {
                // SAFETY: a `PayloadFate` of `Drop` is made only by the state
                // machine (`state::fate_of`), for the one caller whose
                // transition left the word final with no holders, and it is
                // spent here, once (it is not `Copy`).
                unsafe { block.slot(slot).drop_payload() };
                if own() {
                    self.grouped_gone(block, slot, false);
                }
            }
            // SAFETY: as for `Fate::Drop`.
            Fate::DeadLetter => unsafe { self.dead_letter_payload(block, slot) },
        }
    }

    /// Moves the payload of the message in `slot` of `block` to the dead
    /// letters (out of line: the ack path stays small).
    ///
    /// # Safety
    /// Only for the one holder whose `PayloadFate` was `DeadLetter`: the
    /// payload is moved out once.
    #[cold]
    #[inline(never)]
    unsafe fn dead_letter_payload(&self, block: &Block<T>, slot: usize) {
        let cell = block.slot(slot);
        let word = cell.state.load();
        let reason = match word.tag() {
            Tag::DeadRejected => DeadLetterReason::Rejected,
            _ => DeadLetterReason::MaxAttempts,
        };
        // SAFETY: the caller is the one holder to move it (see above).
        let payload = unsafe { cell.take() };
        let letter = DeadLetter {
            id: self.message_id(block, slot),
            attempts: word.attempt(),
            reason,
            group: block.ids.group(slot).map(GroupKey::from),
            payload,
        };
        // A group held by its dead head is marked held under the dead
        // letters' lock, with its letter put on the list: `release_group`
        // takes that lock too, so it finds the group held exactly when the
        // letter is there to drain. One that moves on does so once its
        // letter is in the list.
        let grouped = block.ids.any();
        let hold = self.config.hold_groups;
        let mut letters = lock(&self.dead_letters);
        match letters.as_mut() {
            Some(list) => {
                if grouped && hold {
                    // Publishes nothing: the group is only marked held.
                    self.grouped_gone(block, slot, true);
                }
                list.push(letter);
            }
            None => {
                drop(letters);
                drop(letter);
                return;
            }
        }
        drop(letters);
        if grouped && !hold {
            self.grouped_gone(block, slot, true);
        }
    }

    /// The payload of the message in `slot` of `block` left the queue
    /// (acked, or `dead`): if the message is a group's head, the group's
    /// next message becomes its head. Out of line: only blocks with an id
    /// table come here. A message discarded at teardown moves nothing:
    /// teardown sets the groups' `torn_down` before it discards anything
    /// (see `Shared::head_gone`).
    #[cold]
    #[inline(never)]
    fn grouped_gone(&self, block: &Block<T>, slot: usize, dead: bool) {
        let Some(key) = block.ids.group(slot) else {
            return;
        };
        (self.head_gone)(&block.shared, block, slot, key, dead);
    }

    /// Hands a rolled-back message to the redeliverer, or discards it if the
    /// queue is already torn down.
    pub(crate) fn hand_over_rollback(&self, message: MessageRef<T>) {
        if let Err(message) = self.inbox.push_rolled_back(message) {
            let slot = message.slot as usize;
            if let Discard::Done { fate } = message.block.slot(slot).state.transition_to_discarded()
            {
                self.release_payload(&message.block, slot, fate);
            }
        }
    }

    /// The message in `slot` of `block` became final (`to`): if its id is
    /// its own, the id is
    /// freed, or stays taken for the dedup window, or while it is a dead
    /// letter. Out of line: only such messages come here.
    #[cold]
    #[inline(never)]
    pub(crate) fn own_id_settled(&self, block: &Block<T>, slot: usize, to: Tag) {
        // A grouped message's id was minted for it, never taken in the map.
        if block.ids.group(slot).is_some() {
            return;
        }
        if let Some(id) = block.ids.get(slot) {
            let dead = matches!(to, Tag::DeadMaxAttempts | Tag::DeadRejected);
            let window = self.dedup.settled(id, dead, || self.clock.precise());
            #[cfg(feature = "journal")]
            if let (Some(until), Some(attached)) = (window, &self.journal) {
                attached
                    .journal
                    .windowed(id, attached.journal.wall_of(until));
            }
            #[cfg(not(feature = "journal"))]
            let _ = window;
        }
    }

    /// Counts `n` messages as produced, unless the queue is closed.
    pub(crate) fn admit(&self, n: u64) -> bool {
        let shared = self;
        // Count first, then look at `closed` (both SeqCst): a consumer that
        // saw `closed` and then `outstanding() == 0` cannot miss these.
        shared.counters.add(Counter::Produced, n);
        crate::sync::seq_cst_accesses();
        let closed = shared.is_closed();
        if closed {
            shared.counters.sub(Counter::Produced, n);
            shared.waiters.notify(true);
            return false;
        }
        true
    }

    /// See `Queue::stats`.
    pub(crate) fn stats(&self) -> Stats
    where
        T: Send + Sync + 'static,
    {
        let shared = self;
        // Settles first, then the index, then `produced`: under traffic a
        // message is then counted at most once among acked, dead-lettered,
        // ready and delayed, so `in_flight` errs high (by messages produced
        // during the walk), never low.
        let c = &shared.counters;
        let (acked, dead_lettered) = (c.get(Counter::Acked), c.get(Counter::DeadLettered));
        let repeat_claims = c.get(Counter::RepeatClaims);
        let now = shared.clock.precise();
        let pending = shared.index.count_pending(now);
        let (ready, delayed) = (pending.ready, pending.delayed);
        // After the index: a message published from its group meanwhile is
        // counted in neither, so `in_flight` still errs high.
        let groups = shared.groups.counts();
        let waiting = c
            .get(Counter::GroupedWaited)
            .saturating_sub(c.get(Counter::GroupedStarted));
        let produced = c.get(Counter::Produced);
        Stats {
            produced,
            // First deliveries are every message produced except those never
            // claimed yet (see `Counter::RepeatClaims`). Exact when quiescent;
            // under traffic off by the produces and claims in progress.
            delivered: produced.saturating_sub(pending.never_claimed + waiting) + repeat_claims,
            acked,
            rolled_back: c.get(Counter::RolledBack),
            deferred: c.get(Counter::Deferred),
            redriven: c.get(Counter::Redriven),
            expired: c.get(Counter::Expired),
            redelivered: c.get(Counter::Redelivered),
            throttled: c.get(Counter::Throttled),
            dead_lettered,
            ready,
            delayed,
            grouped_waiting: waiting,
            groups: groups.groups,
            groups_held: groups.held,
            oldest_group_head: groups.oldest.map(|since| crate::groups::age(since, now)),
            in_flight: produced.saturating_sub(acked + dead_lettered + ready + delayed + waiting),
        }
    }
}

impl<T: Send + Sync + 'static> Advanced for Arc<Shared<T>> {
    /// The manual clock moved: the recent reading follows it (so claims
    /// see the new time), consumers wake for the delayed messages now due
    /// (a SeqCst fence and load in `notify`, after the clock's SeqCst
    /// store: see `ManualClock::advance`), and the redeliverer wakes for
    /// the leases that ran out and the rollbacks that fell due, and wakes
    /// the waiting tasks whose time came; the wait returned is for that
    /// pass.
    fn advanced(&self) -> Box<dyn FnOnce() + Send> {
        self.clock.advanced();
        self.waiters.notify(true);
        let ticket = self.inbox.advanced();
        let shared = Arc::clone(self);
        Box::new(move || shared.inbox.wait_passed(ticket))
    }
}
