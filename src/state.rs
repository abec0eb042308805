//! The per-message state word and its transitions.
//!
//! Every message has exactly one [`MessageState`] for its whole life, in the
//! slot where it was produced. Redelivery never copies the message: it puts a
//! new reference to the same slot into the index. So every claim and every
//! settle of one message writes the same word, and whoever wins a
//! compare-exchange owns the transition, with one exception: the first claim
//! of a fresh message is decided by its block's cursor and written with a
//! store ([`MessageState::claim_fresh`]). docs/design.md draws the states.
//!
//! Layout of the 64-bit word (low bits first):
//!
//! | bits  | field    | meaning |
//! |-------|----------|---------|
//! | 0..4  | tag      | the state, see [`Tag`] |
//! | 4..16 | attempt  | deliveries so far; the generation a holder must match |
//! | 16..28| holders  | live `Delivery` values that point at the payload |
//! | 28..64| tick     | lease deadline while claimed, in ms ticks (wrapping); while pending at attempt 0, the timestamp in us after the block's key; 1 while deferred (rolled back or pending at attempt 1 or more, put back by a defer), else 0 |
//!
//! The timestamp of a fresh message lives in its word, not in a field of its
//! own: the producer's publish writes both at once, and a slot of a `u64`
//! is 16 bytes (docs/design.md, "Why blocks", has the measurement).

use crate::sync::{AtomicU64, Ordering, SetMut, SpinWait};

const TAG_BITS: u32 = 4;
const COUNT_BITS: u32 = 12;
const ATTEMPT_SHIFT: u32 = TAG_BITS;
const HOLDERS_SHIFT: u32 = ATTEMPT_SHIFT + COUNT_BITS;
const TICK_SHIFT: u32 = HOLDERS_SHIFT + COUNT_BITS;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// Mask of the 36-bit wrapping millisecond tick stored in the word.
pub(crate) const TICK_MASK: u64 = (1 << (64 - TICK_SHIFT)) - 1;
/// Ticks compare by wrapping difference; any lease or delay must stay below
/// half the range (about 1.1 years), which [`crate::Builder`] enforces.
pub(crate) const MAX_TICK_SPAN: u64 = 1 << (64 - TICK_SHIFT - 1);
/// The largest timestamp offset a fresh message's word can hold, in
/// microseconds after its block's key (about 19 hours).
pub(crate) const MAX_TS_OFFSET_US: u64 = TICK_MASK;
/// The largest attempt count the word can hold; `max_attempts` is capped here.
pub(crate) const MAX_ATTEMPTS: u32 = COUNT_MASK as u32;
/// The tick field of a message that a defer put back (`RolledBack`, then
/// `Pending`, at an attempt of 1 or more): its next claim keeps the
/// attempt. Those states otherwise have a tick of 0 at such attempts (every
/// settle and expiry clears it); only a fresh message, at attempt 0, keeps
/// a timestamp there.
const DEFERRED: u64 = 1;

/// What the message is doing now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    /// Slot reserved by a producer, payload not yet written. Set at slot
    /// creation; left once, by the producer's publish.
    Empty = 0,
    /// In the index, waiting to be claimed. Set by publish and by the
    /// redeliverer; left by exactly one claim (or by teardown).
    Pending = 1,
    /// Held by the live delivery whose generation equals `attempt`, until
    /// `tick`. Left by that holder's settle or by the redeliverer's expiry.
    Claimed = 2,
    /// Rolled back by its holder; the redeliverer owns the next step.
    RolledBack = 3,
    /// Final: acknowledged.
    Acked = 4,
    /// Final: dead-lettered because its last allowed delivery failed.
    DeadMaxAttempts = 5,
    /// Final: dead-lettered on its holder's request.
    DeadRejected = 6,
    /// Final: the queue was torn down while the message was pending.
    Discarded = 7,
    /// Written by a producer into its group behind the group's head: not
    /// claimable through its block. Left once: by the head's last settle
    /// (`-> Pending` in place, see [`MessageState::unblock`]), by the
    /// block's cursor passing it (`-> Skipped`), or by teardown.
    Blocked = 8,
    /// A `Blocked` message its block's cursor passed: it can no longer be
    /// claimed in place. Left once: by the head's last settle, which moves
    /// the payload into a new slot (`-> Moved`), or by teardown.
    Skipped = 9,
    /// Final: the payload of a skipped message went on in a new slot.
    Moved = 10,
}

impl Tag {
    fn from_bits(bits: u64) -> Tag {
        match bits {
            0 => Tag::Empty,
            1 => Tag::Pending,
            2 => Tag::Claimed,
            3 => Tag::RolledBack,
            4 => Tag::Acked,
            5 => Tag::DeadMaxAttempts,
            6 => Tag::DeadRejected,
            7 => Tag::Discarded,
            8 => Tag::Blocked,
            9 => Tag::Skipped,
            _ => Tag::Moved,
        }
    }

    /// A final state is never left; its payload goes away with the last holder.
    pub(crate) fn is_final(self) -> bool {
        matches!(
            self,
            Tag::Acked | Tag::DeadMaxAttempts | Tag::DeadRejected | Tag::Discarded | Tag::Moved
        )
    }
}

/// One decoded value of the state word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Word")
            .field("tag", &self.tag())
            .field("attempt", &self.attempt())
            .field("holders", &self.holders())
            .field("tick", &self.tick())
            .finish()
    }
}

impl Word {
    pub(crate) fn tag(self) -> Tag {
        Tag::from_bits(self.0 & TAG_MASK)
    }
    pub(crate) fn attempt(self) -> u32 {
        ((self.0 >> ATTEMPT_SHIFT) & COUNT_MASK) as u32
    }
    pub(crate) fn holders(self) -> u32 {
        ((self.0 >> HOLDERS_SHIFT) & COUNT_MASK) as u32
    }
    pub(crate) fn tick(self) -> u64 {
        self.0 >> TICK_SHIFT
    }
    fn with_tag(self, tag: Tag) -> Word {
        Word((self.0 & !TAG_MASK) | tag as u64)
    }
    fn with_attempt(self, attempt: u32) -> Word {
        debug_assert!(u64::from(attempt) <= COUNT_MASK);
        Word((self.0 & !(COUNT_MASK << ATTEMPT_SHIFT)) | (u64::from(attempt) << ATTEMPT_SHIFT))
    }
    fn with_holders(self, holders: u32) -> Word {
        debug_assert!(u64::from(holders) <= COUNT_MASK);
        Word((self.0 & !(COUNT_MASK << HOLDERS_SHIFT)) | (u64::from(holders) << HOLDERS_SHIFT))
    }
    fn with_tick(self, tick: u64) -> Word {
        Word((self.0 & ((1 << TICK_SHIFT) - 1)) | ((tick & TICK_MASK) << TICK_SHIFT))
    }
    /// Is this word a claim held by generation `gen`?
    fn is_claim_of(self, generation: u32) -> bool {
        self.tag() == Tag::Claimed && self.attempt() == generation
    }
}

/// Has the wrapping tick `deadline` been reached at tick `now`?
pub(crate) fn tick_reached(deadline: u64, now: u64) -> bool {
    now.wrapping_sub(deadline) & TICK_MASK < MAX_TICK_SPAN
}

/// The later of two wrapping ticks that lie within [`MAX_TICK_SPAN`].
fn later_tick(a: u64, b: u64) -> u64 {
    if tick_reached(a, b) { b } else { a }
}

/// Outcome of [`MessageState::transition_to_claimed`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// This caller holds the message as delivery number `attempt`.
    ///
    /// (One word, returned in a register; the timestamp comes from the claim
    /// walk, which already read it.)
    Won { attempt: u32 },
    /// Someone else claimed it first, or it is no longer pending at the
    /// expected attempt: it is not this caller's.
    Taken,
}

/// Outcome of a settle by a holder (ack, rollback, dead-letter).
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// The transition happened. `fate` says what this holder, which just
    /// let go, must now do with the payload.
    Done { to: Tag, fate: PayloadFate },
    /// The claim expired (or was settled) before: nothing changed, and the
    /// caller is still a holder that must call [`MessageState::release_holder`].
    Stale,
}

/// What a holder that lets go must do with the payload: a token that only
/// the state machine makes (its field is private to this file) and that is
/// not `Copy`, so the one `Drop` or `DeadLetter` a transition hands out (to
/// the holder whose transition left the word final with no holders) is
/// spent once, by `Shared::release_payload`.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PayloadFate(Fate);

/// The kinds of [`PayloadFate`].
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Fate {
    /// Others still need it (another holder, or the message lives on).
    Keep,
    /// Final state and last holder: drop the payload now.
    Drop,
    /// Dead-lettered and last holder: move the payload to the dead letters.
    DeadLetter,
}

impl PayloadFate {
    /// Spends the token.
    pub(crate) fn into_fate(self) -> Fate {
        self.0
    }
}

fn fate_of(word: Word) -> PayloadFate {
    if word.holders() != 0 {
        return PayloadFate(Fate::Keep);
    }
    PayloadFate(match word.tag() {
        Tag::Acked | Tag::Discarded => Fate::Drop,
        Tag::DeadMaxAttempts | Tag::DeadRejected => Fate::DeadLetter,
        _ => Fate::Keep,
    })
}

/// Outcome of [`MessageState::transition_to_expired`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expire {
    /// Not claimed: nothing to expire.
    NotClaimed,
    /// Claimed, and its lease ends at this tick.
    NotDue { deadline: u64 },
    /// The claim expired; the message is pending again at `attempt` and the
    /// caller must reinsert it into the index.
    Redeliver { attempt: u32 },
    /// The claim expired on the last allowed attempt: dead-lettered. The old
    /// holder still holds it, so its release moves the payload.
    DeadLettered { attempt: u32 },
}

/// Outcome of [`MessageState::transition_to_pending`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reinsert {
    /// Pending again at `attempt`: the caller must put it into the index.
    /// `deferred`: it was deferred, not rolled back (the retry budget lets
    /// it through).
    Pending { attempt: u32, deferred: bool },
    /// Not rolled back (already discarded by teardown): nothing to do.
    NotRolledBack,
}

/// Outcome of [`MessageState::unblock`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unblock {
    /// Pending where it is: its block's cursor will find it.
    InPlace,
    /// Skipped by its block's cursor: the caller moves the payload.
    Move,
    /// Discarded by teardown.
    Gone,
}

/// Outcome of [`MessageState::transition_to_discarded`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Discard {
    /// Discarded; `fate` tells whether the caller drops the payload now.
    Done { fate: PayloadFate },
    /// Not pending or rolled back: someone else owns it.
    NotIdle,
}

/// The atomic state word of one message.
#[derive(Debug)]
pub(crate) struct MessageState {
    word: AtomicU64,
}

impl MessageState {
    /// A reserved slot: `Empty`, attempt 0, no holders.
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(Tag::Empty as u64),
        }
    }

    /// `Pending(0) -> Pending(attempt)` (`due`: ready now, put into the
    /// index by the caller) or `-> RolledBack(attempt)` (handed to the
    /// redeliverer as a rollback is), no holders: a journaled message
    /// restored at open after `attempt` deliveries. Called before the block
    /// is shared.
    #[cfg(feature = "journal")]
    pub(crate) fn restore(&self, attempt: u32, due: bool) {
        debug_assert_eq!(self.load().tag(), Tag::Pending);
        let tag = if due { Tag::Pending } else { Tag::RolledBack };
        let word = Word(0)
            .with_tag(tag)
            .with_attempt(attempt.min(MAX_ATTEMPTS));
        self.word.store(word.0, Ordering::SeqCst);
    }

    /// Back to `Empty`, attempt 0, no holders: the slot of a dead block
    /// being recycled. `&mut`: nobody else can reach the word (the block
    /// was taken back through `Arc::get_mut`, whose Acquire orders this
    /// after every earlier access by another thread).
    pub(crate) fn reset(&mut self) {
        debug_assert!(
            {
                let w = self.load();
                w.tag() == Tag::Empty || (w.tag().is_final() && w.holders() == 0)
            },
            "reset of a live message: {:?}",
            self.load()
        );
        self.word.set_mut(Tag::Empty as u64);
    }

    /// Reads the word. Acquire: pairs with the Release (or AcqRel) of
    /// whichever transition wrote it, so a `Pending` read sees the payload
    /// that [`Self::publish`] made visible.
    pub(crate) fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// `Empty -> Pending(attempt 0)`: the producer wrote the payload, and
    /// the message's timestamp is `ts_offset_us` microseconds after its
    /// block's key (kept in the tick field until the first claim).
    /// SeqCst swap: its Release half pairs with the Acquire load or claim
    /// that reads `Pending`, publishing the payload and timestamp written
    /// before it; being a SeqCst read-modify-write, it also orders the
    /// producer's later SeqCst load of the sleeper count after it (see
    /// `Waiters::notify_after_publish`), which on x86 is cheaper than a fence.
    pub(crate) fn publish(&self, ts_offset_us: u64) {
        debug_assert!(ts_offset_us <= MAX_TS_OFFSET_US);
        self.word.swap(
            Word(0).with_tag(Tag::Pending).with_tick(ts_offset_us).0,
            Ordering::SeqCst,
        );
    }

    /// `Empty -> Blocked(attempt 0)`: the producer wrote the payload of a
    /// message that waits behind its group's head, stamped as
    /// [`Self::publish`] stamps. Release: pairs with the Acquire of whoever
    /// reads or moves the word next (the unblock, a skip, teardown).
    pub(crate) fn publish_blocked(&self, ts_offset_us: u64) {
        debug_assert!(ts_offset_us <= MAX_TS_OFFSET_US);
        self.word.store(
            Word(0).with_tag(Tag::Blocked).with_tick(ts_offset_us).0,
            Ordering::Release,
        );
    }

    /// The head of this message's group is gone: `Blocked -> Pending` in
    /// place, keeping its timestamp (claimed by its block's cursor as any
    /// fresh message), or `Skipped -> Moved` (the caller takes the payload
    /// to a new slot).
    ///
    /// SeqCst compare-exchange, as [`Self::publish`] is a SeqCst swap: its
    /// Release half publishes the word to the claimer's Acquire load, and
    /// being a SeqCst read-modify-write it orders the caller's SeqCst load
    /// of the sleeper count after it (`Waiters::notify_after_publish`).
    pub(crate) fn unblock(&self) -> Unblock {
        let mut current = self.load();
        loop {
            let next = match current.tag() {
                Tag::Blocked => current.with_tag(Tag::Pending),
                // Attempt 1: its prepaid reference goes with the move (see
                // `block::release_prepaid`).
                Tag::Skipped => Word(0).with_tag(Tag::Moved).with_attempt(1),
                // Discarded: the queue was torn down.
                _ => return Unblock::Gone,
            };
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::SeqCst,
                // Acquire: as in `load`.
                Ordering::Acquire,
            ) {
                Ok(_) if next.tag() == Tag::Pending => return Unblock::InPlace,
                Ok(_) => return Unblock::Move,
                Err(actual) => current = Word(actual),
            }
        }
    }

    /// `Blocked -> Skipped`: the block's cursor passes this message. False
    /// if it is not blocked any more (unblocked meanwhile: look again).
    pub(crate) fn skip(&self) -> bool {
        self.transition(|w| {
            if w.tag() == Tag::Blocked {
                Ok(w.with_tag(Tag::Skipped))
            } else {
                Err(())
            }
        })
        .is_ok()
    }

    /// The one compare-exchange loop every transition goes through. `step`
    /// maps the current word to the new one, or refuses with an outcome.
    /// Success is AcqRel: Acquire pairs with the Release of the transition
    /// that wrote the old word (so a holder's reads of the payload happen
    /// before whoever releases it last drops it), Release publishes this one.
    /// Failure is Acquire for the same reason as [`Self::load`].
    fn transition<R>(
        &self,
        mut step: impl FnMut(Word) -> Result<Word, R>,
    ) -> Result<(Word, Word), R> {
        let spin = SpinWait::new();
        let mut current = self.load();
        loop {
            let next = step(current)?;
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok((current, next)),
                Err(actual) => {
                    current = Word(actual);
                    spin.spin();
                }
            }
        }
    }

    /// `Pending(attempt) -> Claimed(attempt + 1)`, adding a holder and setting
    /// the lease deadline; `-> Claimed(attempt)` if a defer put it back (the
    /// defer did not use an attempt). Only a pending message at exactly
    /// `expected_attempt` can be claimed, so an index entry left over from an
    /// earlier round can never claim a message that was since redelivered.
    ///
    /// A deferred message is claimed at the generation its deferring holder
    /// had: that holder was consumed by the defer, and every stale holder
    /// (left by an expiry) has a lower generation, since an expiry at
    /// generation `g` leaves the word at `g` and every later claim is at
    /// `g + 1` or above (a defer only ever returns to its own claim's
    /// generation). So no live delivery other than the new one matches.
    pub(crate) fn transition_to_claimed(&self, expected_attempt: u32, deadline: u64) -> Claim {
        let result = self.transition(|w| {
            if w.tag() == Tag::Pending && w.attempt() == expected_attempt {
                let deferred = expected_attempt > 0 && w.tick() == DEFERRED;
                Ok(w.with_tag(Tag::Claimed)
                    .with_attempt(expected_attempt + u32::from(!deferred))
                    .with_holders(w.holders() + 1)
                    .with_tick(deadline))
            } else {
                Err(())
            }
        });
        match result {
            Ok((_, new)) => Claim::Won {
                attempt: new.attempt(),
            },
            Err(()) => Claim::Taken,
        }
    }

    /// `Pending(0) -> Claimed(1)`, one holder, lease until `deadline`: the
    /// first claim of a fresh message, by the consumer that moved its
    /// block's cursor past it. Returns the attempt, 1.
    ///
    /// A store, not a compare-exchange: nothing else can write the word of
    /// a message pending at attempt 0. Only a claim leaves that state (or
    /// teardown, which needs every handle gone, so no claim runs), only the
    /// cursor's winner claims a fresh slot, and a fresh message never had a
    /// holder who could release itself. On the claim path this saves the
    /// locked instruction the cursor's compare-exchange costs. The claimer
    /// sees the payload through its own Acquire load of the word that read
    /// `Pending` (`Batch::head`), which pairs with the producer's publish:
    /// that load must stay Acquire.
    pub(crate) fn claim_fresh(&self, deadline: u64) -> u32 {
        debug_assert_eq!(
            (self.load().tag(), self.load().attempt()),
            (Tag::Pending, 0),
            "claim_fresh on a word that is not pending at attempt 0"
        );
        let claimed = Word(0)
            .with_tag(Tag::Claimed)
            .with_attempt(1)
            .with_holders(1)
            .with_tick(deadline);
        // Release: pairs with the Acquire of the next transition of this
        // word (a settle, or the redeliverer's expiry), like any transition.
        self.word.store(claimed.0, Ordering::Release);
        1
    }

    /// Settles the claim of generation `gen` into `to`, dropping its holder
    /// and leaving `tick` in the tick field.
    fn settle(&self, generation: u32, to: impl Fn(Word) -> Tag, tick: u64) -> Settle {
        let result = self.transition(|w| {
            if w.is_claim_of(generation) {
                Ok(w.with_tag(to(w))
                    .with_holders(w.holders() - 1)
                    .with_tick(tick))
            } else {
                Err(())
            }
        });
        match result {
            Ok((_, new)) => Settle::Done {
                to: new.tag(),
                fate: fate_of(new),
            },
            Err(()) => Settle::Stale,
        }
    }

    /// `Claimed(gen) -> Acked`: the holder of generation `gen` is done.
    pub(crate) fn transition_to_acked(&self, generation: u32) -> Settle {
        self.settle(generation, |_| Tag::Acked, 0)
    }

    /// `Claimed(gen) -> RolledBack`, or `-> DeadMaxAttempts` when `gen` was
    /// the last allowed attempt.
    pub(crate) fn transition_to_rolled_back(&self, generation: u32, max_attempts: u32) -> Settle {
        self.settle(
            generation,
            |w| {
                if w.attempt() >= max_attempts {
                    Tag::DeadMaxAttempts
                } else {
                    Tag::RolledBack
                }
            },
            0,
        )
    }

    /// `Claimed(gen) -> RolledBack(gen)`, deferred: the redeliverer puts it
    /// back as it does a rollback, and its next claim is at `gen` again
    /// (see [`Self::transition_to_claimed`]). Never dead-letters: a defer
    /// does not use an attempt.
    pub(crate) fn transition_to_deferred(&self, generation: u32) -> Settle {
        self.settle(generation, |_| Tag::RolledBack, DEFERRED)
    }

    /// `Claimed(gen) -> DeadRejected`: the holder gives up on the message.
    pub(crate) fn transition_to_rejected(&self, generation: u32) -> Settle {
        self.settle(generation, |_| Tag::DeadRejected, 0)
    }

    /// Moves the lease deadline of claim `gen` to `deadline` unless it is
    /// already later, counting the grace `grace(tick)` its current deadline
    /// has (see `transition_to_expired`), so that an extension never ends a
    /// lease sooner. Returns false, with no effect, if the claim is gone.
    #[must_use]
    pub(crate) fn extend_lease(
        &self,
        generation: u32,
        deadline: u64,
        grace: impl Fn(u64) -> u64,
    ) -> bool {
        self.transition(|w| {
            if w.is_claim_of(generation) {
                let current = w.tick().wrapping_add(grace(w.tick())) & TICK_MASK;
                Ok(w.with_tick(later_tick(current, deadline)))
            } else {
                Err(())
            }
        })
        .is_ok()
    }

    /// A stale holder (its claim expired or was superseded) lets go.
    pub(crate) fn release_holder(&self) -> PayloadFate {
        match self.transition(|w| {
            debug_assert!(w.holders() > 0, "release without a holder: {w:?}");
            Ok::<_, ()>(w.with_holders(w.holders().saturating_sub(1)))
        }) {
            Ok((_, new)) => fate_of(new),
            Err(()) => PayloadFate(Fate::Keep),
        }
    }

    /// Redeliverer: if the claim's lease ended by tick `now`, take it away
    /// from its holder: `Claimed -> Pending` for another round, or
    /// `-> DeadMaxAttempts` if that was the last allowed attempt. The old
    /// holder stays counted in `holders` until it drops its delivery.
    ///
    /// `grace(deadline)` gives the ticks a lease that ends at `deadline`
    /// lasts longer than that (see `clock::Lags::grace`); it is asked only
    /// about deadlines reached.
    pub(crate) fn transition_to_expired(
        &self,
        now: u64,
        max_attempts: u32,
        grace: impl Fn(u64) -> u64,
    ) -> Expire {
        let result = self.transition(|w| {
            if w.tag() != Tag::Claimed {
                return Err(Expire::NotClaimed);
            }
            if !tick_reached(w.tick(), now) {
                return Err(Expire::NotDue { deadline: w.tick() });
            }
            let graced = w.tick().wrapping_add(grace(w.tick())) & TICK_MASK;
            if !tick_reached(graced, now) {
                return Err(Expire::NotDue { deadline: graced });
            }
            let to = if w.attempt() >= max_attempts {
                Tag::DeadMaxAttempts
            } else {
                Tag::Pending
            };
            Ok(w.with_tag(to).with_tick(0))
        });
        match result {
            Ok((_, new)) if new.tag() == Tag::Pending => Expire::Redeliver {
                attempt: new.attempt(),
            },
            Ok((_, new)) => Expire::DeadLettered {
                attempt: new.attempt(),
            },
            Err(outcome) => outcome,
        }
    }

    /// Redeliverer: `RolledBack(attempt) -> Pending(attempt)`.
    pub(crate) fn transition_to_pending(&self) -> Reinsert {
        match self.transition(|w| {
            if w.tag() == Tag::RolledBack {
                Ok(w.with_tag(Tag::Pending))
            } else {
                Err(())
            }
        }) {
            Ok((_, new)) => Reinsert::Pending {
                attempt: new.attempt(),
                deferred: new.attempt() > 0 && new.tick() == DEFERRED,
            },
            Err(()) => Reinsert::NotRolledBack,
        }
    }

    /// Teardown: `Pending | RolledBack | Blocked | Skipped -> Discarded`.
    pub(crate) fn transition_to_discarded(&self) -> Discard {
        match self.transition(|w| {
            if matches!(
                w.tag(),
                Tag::Pending | Tag::RolledBack | Tag::Blocked | Tag::Skipped
            ) {
                Ok(w.with_tag(Tag::Discarded))
            } else {
                Err(())
            }
        }) {
            Ok((_, new)) => Discard::Done { fate: fate_of(new) },
            Err(()) => Discard::NotIdle,
        }
    }

    /// Whether the slot still holds an initialised payload, judged from the
    /// word alone. Only meaningful when no transition can run concurrently
    /// (the slot is being dropped).
    pub(crate) fn holds_payload(&self) -> bool {
        let w = self.load();
        match w.tag() {
            Tag::Empty => false,
            // A final state lost its payload when the last holder let go.
            tag if tag.is_final() => w.holders() != 0,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grouped message waits `Blocked`; its group's hand-over makes it
    /// pending in place, or, once a cursor skipped it, moves it (final,
    /// at attempt 1, its payload the mover's); teardown discards either.
    #[test]
    fn a_blocked_message_is_unblocked_in_place_or_moved_once_skipped() {
        let s = MessageState::new();
        s.publish_blocked(5);
        assert_eq!(s.load().tag(), Tag::Blocked);
        assert!(s.load().tag() != Tag::Pending, "not claimable");
        assert_eq!(s.unblock(), Unblock::InPlace);
        let w = s.load();
        assert_eq!((w.tag(), w.attempt(), w.tick()), (Tag::Pending, 0, 5));
        assert!(!s.skip(), "a pending message is not skipped");
        assert_eq!(s.unblock(), Unblock::Gone, "unblocked once");

        let s = MessageState::new();
        s.publish_blocked(0);
        assert!(s.skip());
        assert!(!s.skip(), "skipped once");
        assert_eq!(s.unblock(), Unblock::Move);
        let w = s.load();
        assert_eq!((w.tag(), w.attempt(), w.holders()), (Tag::Moved, 1, 0));
        assert!(w.tag().is_final() && !s.holds_payload());
        assert_eq!(s.unblock(), Unblock::Gone, "moved once");

        for skipped in [false, true] {
            let s = MessageState::new();
            s.publish_blocked(0);
            if skipped {
                assert!(s.skip());
            }
            assert!(s.holds_payload());
            assert!(matches!(s.transition_to_discarded(), Discard::Done { .. }));
            assert_eq!(s.unblock(), Unblock::Gone, "discarded by teardown");
        }
    }

    fn pending() -> MessageState {
        let s = MessageState::new();
        s.publish(0);
        s
    }

    #[test]
    fn claim_is_exclusive_and_counts_attempts() {
        let s = pending();
        assert!(matches!(
            s.transition_to_claimed(0, 100),
            Claim::Won { attempt: 1 }
        ));
        assert_eq!(s.transition_to_claimed(0, 100), Claim::Taken);
        let w = s.load();
        assert_eq!(
            (w.tag(), w.attempt(), w.holders(), w.tick()),
            (Tag::Claimed, 1, 1, 100)
        );
    }

    #[test]
    fn a_fresh_message_keeps_its_timestamp_in_the_word_until_claimed() {
        let s = MessageState::new();
        s.publish(MAX_TS_OFFSET_US);
        let w = s.load();
        assert_eq!(
            (w.tag(), w.attempt(), w.tick()),
            (Tag::Pending, 0, MAX_TS_OFFSET_US)
        );
        assert!(matches!(
            s.transition_to_claimed(0, 7),
            Claim::Won { attempt: 1 }
        ));
        // The lease deadline took the field's place.
        assert_eq!(s.load().tick(), 7);
    }

    #[test]
    fn ack_by_the_holder_releases_the_payload() {
        let s = pending();
        assert!(matches!(s.transition_to_claimed(0, 5), Claim::Won { .. }));
        assert_eq!(
            s.transition_to_acked(1),
            Settle::Done {
                to: Tag::Acked,
                fate: PayloadFate(Fate::Drop)
            }
        );
        assert_eq!(s.transition_to_acked(1), Settle::Stale);
        assert!(!s.holds_payload());
    }

    #[test]
    fn expiry_beats_a_late_ack_and_the_stale_holder_keeps_the_payload_alive() {
        let s = pending();
        assert!(matches!(
            s.transition_to_claimed(0, 10),
            Claim::Won { attempt: 1 }
        ));
        assert_eq!(
            s.transition_to_expired(9, 16, |_| 0),
            Expire::NotDue { deadline: 10 }
        );
        assert_eq!(
            s.transition_to_expired(10, 16, |_| 0),
            Expire::Redeliver { attempt: 1 }
        );
        // The old holder's ack is refused and changes nothing.
        assert_eq!(s.transition_to_acked(1), Settle::Stale);
        // Reclaimed as attempt 2 while the stale holder still holds it (ABA).
        assert!(matches!(
            s.transition_to_claimed(1, 50),
            Claim::Won { attempt: 2 }
        ));
        assert_eq!(s.transition_to_acked(1), Settle::Stale);
        assert_eq!(s.load().holders(), 2);
        // The new holder acks; the payload stays for the stale holder.
        assert_eq!(
            s.transition_to_acked(2),
            Settle::Done {
                to: Tag::Acked,
                fate: PayloadFate(Fate::Keep)
            }
        );
        assert_eq!(s.release_holder(), PayloadFate(Fate::Drop));
    }

    #[test]
    fn rollback_on_the_last_attempt_dead_letters() {
        let s = pending();
        assert!(matches!(
            s.transition_to_claimed(0, 1),
            Claim::Won { attempt: 1 }
        ));
        assert_eq!(
            s.transition_to_rolled_back(1, 2),
            Settle::Done {
                to: Tag::RolledBack,
                fate: PayloadFate(Fate::Keep)
            }
        );
        assert_eq!(
            s.transition_to_pending(),
            Reinsert::Pending {
                attempt: 1,
                deferred: false
            }
        );
        assert!(matches!(
            s.transition_to_claimed(1, 1),
            Claim::Won { attempt: 2 }
        ));
        assert_eq!(
            s.transition_to_rolled_back(2, 2),
            Settle::Done {
                to: Tag::DeadMaxAttempts,
                fate: PayloadFate(Fate::DeadLetter)
            }
        );
    }

    #[test]
    fn expiry_on_the_last_attempt_dead_letters_after_the_holder_lets_go() {
        let s = pending();
        assert!(matches!(
            s.transition_to_claimed(0, 3),
            Claim::Won { attempt: 1 }
        ));
        assert_eq!(
            s.transition_to_expired(3, 1, |_| 0),
            Expire::DeadLettered { attempt: 1 }
        );
        assert_eq!(s.transition_to_rolled_back(1, 1), Settle::Stale);
        assert_eq!(s.release_holder(), PayloadFate(Fate::DeadLetter));
    }

    #[test]
    fn extend_never_shortens_and_fails_once_expired() {
        let s = pending();
        assert!(matches!(s.transition_to_claimed(0, 10), Claim::Won { .. }));
        assert!(s.extend_lease(1, 20, |_| 0));
        assert!(s.extend_lease(1, 15, |_| 0));
        assert_eq!(s.load().tick(), 20);
        assert_eq!(
            s.transition_to_expired(19, 16, |_| 0),
            Expire::NotDue { deadline: 20 }
        );
        assert_eq!(
            s.transition_to_expired(20, 16, |_| 0),
            Expire::Redeliver { attempt: 1 }
        );
        assert!(!s.extend_lease(1, 100, |_| 0));
    }

    #[test]
    fn ticks_compare_across_wrap_around() {
        assert!(tick_reached(TICK_MASK, 0));
        assert!(!tick_reached(0, TICK_MASK));
        assert!(tick_reached(5, 5));
        assert_eq!(later_tick(TICK_MASK - 1, 2), 2);
    }

    #[test]
    fn discard_only_takes_idle_messages() {
        let s = pending();
        assert_eq!(
            s.transition_to_discarded(),
            Discard::Done {
                fate: PayloadFate(Fate::Drop)
            }
        );
        let s = pending();
        assert!(matches!(s.transition_to_claimed(0, 10), Claim::Won { .. }));
        assert_eq!(s.transition_to_discarded(), Discard::NotIdle);
    }
}
