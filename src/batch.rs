//! What one skiplist node holds: a run of messages in `(timestamp, id)`
//! order, with a claim cursor. Fresh messages are a [`Block`] of their own
//! slots; redelivered ones are a [`RefBatch`] of references to the slots they
//! were produced in.

use crate::block::Block;
use crate::cursor::Cursor;
use crate::state::{Claim, Tag};
use crate::sync::{Arc, MODEL, now, pause};

/// Nanoseconds per index batch of redelivered messages (100 us). Redelivery
/// due times are rounded up to a multiple of it, so a batch falls due whole.
pub(crate) const SPAN_NS: u64 = 100_000;
/// `ts` rounded up to a multiple of [`SPAN_NS`] (unchanged within a
/// span of the clock's end).
pub(crate) fn round_up_to_span(ts: u64) -> u64 {
    ts.checked_next_multiple_of(SPAN_NS).unwrap_or(ts)
}

/// A reference to one message, as put back by the redeliverer.
pub(crate) struct MessageRef<T> {
    pub(crate) block: Arc<Block<T>>,
    pub(crate) slot: u32,
    /// The attempt the message is pending at; a claim through this entry
    /// succeeds only at exactly this attempt.
    pub(crate) attempt: u32,
    /// Due time in nanoseconds since the queue's origin.
    pub(crate) ts: u64,
}

/// Redelivered messages due in the same 100 us span, sorted by `(ts, id)`.
pub(crate) struct RefBatch<T> {
    cursor: Cursor,
    entries: Box<[MessageRef<T>]>,
}

impl<T> RefBatch<T> {
    pub(crate) fn new(entries: Vec<MessageRef<T>>) -> Self {
        Self {
            cursor: Cursor::new(),
            entries: entries.into_boxed_slice(),
        }
    }
}

/// Pauses between two looks at a cursor while giving way. A pause takes 1
/// to 40 ns depending on the CPU, so [`GIVE_WAY_MAX`] bounds the wait in
/// time.
const GIVE_WAY_PAUSES: u32 = 128;
/// Giving way goes on only while the cursor moves by at least this many
/// entries per look: one consumer taking message after message, not
/// several each claiming now and then
/// between handlers, which the loser must not wait for.
const GIVE_WAY_MIN_STEP: usize = 8;
/// The longest a consumer gives way at a time.
const GIVE_WAY_MAX: std::time::Duration = std::time::Duration::from_micros(50);

pub(crate) enum Batch<T> {
    Fresh(Arc<Block<T>>),
    Redelivery(Box<RefBatch<T>>),
}

/// The first claimable entry of a batch, as seen now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// Entry `pos` is pending, due at `ts`; the cursor read `from` (the
    /// entries in `from..pos` can never be claimed here again).
    Ready { from: usize, pos: usize, ts: u64 },
    /// A producer reserved the next slot and is still writing it.
    Busy,
    /// Nothing to claim now; producers may still add to this block.
    Drained,
    /// Nothing to claim, ever: the batch can leave the index.
    Exhausted,
}

/// Pending messages, as counted by `Index::count_pending`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingCount {
    /// Due now.
    pub(crate) ready: u64,
    /// Not due yet.
    pub(crate) delayed: u64,
    /// Of those, never delivered (attempt 0).
    pub(crate) never_claimed: u64,
}

/// A claim won through a batch: what a `Delivery` is built from. Two
/// words, so that it, a `Delivery` and the results that carry them are
/// returned in registers (see [`ClaimBits`]).
pub(crate) struct Claimed<T> {
    pub(crate) block: Arc<Block<T>>,
    pub(crate) bits: ClaimBits,
}

/// A claim's slot, attempt and timestamp, and a delivery's "not settled
/// yet" flag, in one word:
///
/// | bits | field |
/// |---|---|
/// | 0..6 | slot in the block |
/// | 6..18 | attempt (the claim's generation) |
/// | 18 | live: the delivery is not settled yet |
/// | 19..64 | timestamp, in microseconds after the block's key |
///
/// Packed so that a `Delivery` is 16 bytes, returned from each layer of
/// `consume` in two registers (separate fields would make it 32 bytes,
/// returned through memory). The timestamp is capped at [`Self::MAX_TS_US`] (about 407
/// days after the message's block was opened), never later than the real
/// one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimBits(u64);

impl ClaimBits {
    const ATTEMPT_SHIFT: u32 = crate::block::SLOT_BITS;
    const LIVE: u64 = 1 << (Self::ATTEMPT_SHIFT + 12);
    const TS_SHIFT: u32 = Self::ATTEMPT_SHIFT + 13;
    /// The largest timestamp offset a claim keeps, in microseconds.
    pub(crate) const MAX_TS_US: u64 = (1 << (64 - Self::TS_SHIFT)) - 1;

    /// A live claim of `slot` at `attempt`, `ts_us` microseconds after the
    /// block's key (capped).
    pub(crate) fn new(slot: usize, attempt: u32, ts_us: u64) -> Self {
        debug_assert!(slot < 1 << crate::block::SLOT_BITS);
        debug_assert!(attempt <= crate::state::MAX_ATTEMPTS);
        Self(
            slot as u64
                | u64::from(attempt) << Self::ATTEMPT_SHIFT
                | Self::LIVE
                | ts_us.min(Self::MAX_TS_US) << Self::TS_SHIFT,
        )
    }

    pub(crate) fn slot(self) -> usize {
        (self.0 & ((1 << crate::block::SLOT_BITS) - 1)) as usize
    }

    pub(crate) fn attempt(self) -> u32 {
        ((self.0 >> Self::ATTEMPT_SHIFT) & 0xfff) as u32
    }

    pub(crate) fn ts_us(self) -> u64 {
        self.0 >> Self::TS_SHIFT
    }

    pub(crate) fn is_live(self) -> bool {
        self.0 & Self::LIVE != 0
    }

    pub(crate) fn settled(self) -> Self {
        Self(self.0 & !Self::LIVE)
    }
}

/// One entry of a batch, borrowed.
struct Entry<'a, T> {
    block: &'a Arc<Block<T>>,
    slot: usize,
    expected_attempt: u32,
    /// `None` for fresh slots: their timestamp is in their state word.
    ts: Option<u64>,
}

impl<T> Batch<T> {
    fn cursor(&self) -> usize {
        match self {
            Batch::Fresh(block) => block.cursor.load(),
            Batch::Redelivery(batch) => batch.cursor.load(),
        }
    }

    /// After losing this batch's cursor to another consumer, which moved it
    /// to `seen`: waits while the cursor keeps moving fast (a consumer is
    /// taking message after message, with the lines they share in its
    /// cache), and returns as soon as it slows down (under
    /// [`GIVE_WAY_MIN_STEP`] entries per look: the winner went into a
    /// handler, or several consumers claim between handlers), the batch
    /// runs out, or [`GIVE_WAY_MAX`] has passed. One look reads the cursor,
    /// so a consumer that gives way costs the one it waits for a line
    /// transfer per look, not per message.
    ///
    /// In the loom world giving way is only a matter of timing, which loom
    /// does not model: the caller looks again at once.
    fn give_way(&self, mut seen: usize) {
        if MODEL {
            return;
        }
        let start = now();
        loop {
            for _ in 0..GIVE_WAY_PAUSES {
                pause();
            }
            let cursor = self.cursor();
            if cursor < seen.saturating_add(GIVE_WAY_MIN_STEP)
                || cursor >= self.capacity()
                || now().saturating_duration_since(start) >= GIVE_WAY_MAX
            {
                return;
            }
            seen = cursor;
        }
    }

    /// See [`Cursor::advance`].
    fn move_cursor(&self, from: usize, to: usize) -> Result<(), usize> {
        match self {
            Batch::Fresh(block) => block.cursor.advance(from, to),
            Batch::Redelivery(batch) => batch.cursor.advance(from, to),
        }
    }

    /// Entries that will ever exist.
    fn capacity(&self) -> usize {
        match self {
            Batch::Fresh(block) => block.len(),
            Batch::Redelivery(batch) => batch.entries.len(),
        }
    }

    /// Entry `pos`, if it exists yet.
    fn entry(&self, pos: usize) -> Option<Entry<'_, T>> {
        match self {
            // Only the slot's state says whether it was written; reading the
            // producers' reservation counter here would cost a cache miss
            // per claim.
            Batch::Fresh(block) => (pos < block.len()).then_some(Entry {
                block,
                slot: pos,
                expected_attempt: 0,
                ts: None,
            }),
            Batch::Redelivery(batch) => batch.entries.get(pos).map(|r| Entry {
                block: &r.block,
                slot: r.slot as usize,
                expected_attempt: r.attempt,
                ts: Some(r.ts),
            }),
        }
    }

    /// Whether this batch is a link of the chain of immediate messages,
    /// whose messages are claimed in the order they were appended.
    pub(crate) fn is_chained(&self) -> bool {
        matches!(self, Batch::Fresh(block) if block.is_chained())
    }

    /// Finds the first claimable entry. When there is none it moves the
    /// cursor past the entries it found settled; when there is one, the
    /// claim does ([`Self::claim`]).
    pub(crate) fn head(&self) -> Head {
        let start = self.cursor();
        let mut pos = start;
        let head = loop {
            let Some(entry) = self.entry(pos) else {
                break if pos >= self.capacity() {
                    Head::Exhausted
                } else {
                    Head::Drained
                };
            };
            let slot = entry.block.slot(entry.slot);
            let word = slot.state.load();
            match word.tag() {
                Tag::Pending if word.attempt() == entry.expected_attempt => {
                    break Head::Ready {
                        from: start,
                        pos,
                        ts: entry
                            .ts
                            .unwrap_or_else(|| entry.block.ts_after_key(word.tick())),
                    };
                }
                Tag::Empty => break self.unwritten(pos),
                // Waiting behind its group's head: the cursor passes it,
                // marked, so that the head's settle moves it on rather than
                // leave it here (see `MessageState::unblock`). Unblocked
                // meanwhile: look again.
                Tag::Blocked => {
                    if slot.state.skip() {
                        entry.block.shared.groups.skipped(entry.block);
                        pos += 1;
                    }
                }
                // Claimed through this entry, or moved on since: never again
                // claimable here.
                _ => pos += 1,
            }
        };
        if pos > start && !matches!(head, Head::Ready { .. }) {
            // A failure means another consumer moved it further: fine.
            let _ = self.move_cursor(start, pos);
        }
        head
    }

    /// Entry `pos` of a fresh block is `Empty`: reserved and being written,
    /// or not reserved yet.
    fn unwritten(&self, pos: usize) -> Head {
        match self {
            Batch::Fresh(block) if pos < block.reserved() => Head::Busy,
            _ => Head::Drained,
        }
    }

    /// Tries to claim entry `pos`, due at `ts`, with the cursor read as
    /// `from` (all three as returned by [`Self::head`]: a fresh message's
    /// timestamp does not change while it waits for its first claim, nor
    /// does a redelivery entry's).
    ///
    /// The claim is a ticket: whoever moves the cursor from `from` past
    /// `pos` is the only one that may claim entry `pos` through this batch.
    /// A loser returns `None` and its caller backs off before it looks
    /// again, which lets the winner take the next few entries while their
    /// lines are still in its cache. (With the cursor as a mere hint, two
    /// consumers would take every other message and hand every line back
    /// and forth; docs/design.md, "Claims".)
    pub(crate) fn claim(
        &self,
        from: usize,
        pos: usize,
        ts: u64,
        deadline_tick: u64,
    ) -> Option<Claimed<T>> {
        let entry = self.entry(pos)?;
        let mut from = from;
        while let Err(moved) = self.move_cursor(from, pos + 1) {
            if moved > pos {
                // Someone claimed entry `pos` (or moved past it).
                self.give_way(moved);
                return None;
            }
            // Another consumer's `head` moved the cursor past settled
            // entries, not past `pos`: this caller saw everything from
            // `from` to `pos` settled too, so it may take the ticket from
            // there.
            from = moved;
        }
        let slot = entry.block.slot(entry.slot);
        let (attempt, block) = match self {
            Batch::Fresh(_) => {
                // The ticket makes this the one claim that can move the
                // slot out of `Pending` at attempt 0 (see
                // `MessageState::claim_fresh`).
                let attempt = slot.state.claim_fresh(deadline_tick);
                // A first delivery: the retry budget's deposit, counted only
                // for a queue with a budget.
                let shared = &entry.block.shared;
                if shared.config.retry_budget.is_some() {
                    count_first_claim(shared);
                }
                // SAFETY: this claim moved the slot from attempt 0 to 1,
                // which happens once per slot: its prepaid reference is
                // this claim's.
                (attempt, unsafe { crate::block::adopt_prepaid(entry.block) })
            }
            Batch::Redelivery(_) => {
                // A compare-exchange all the same: a stale holder of an
                // earlier claim may be releasing itself from the word.
                match slot
                    .state
                    .transition_to_claimed(entry.expected_attempt, deadline_tick)
                {
                    Claim::Won { attempt } => {
                        // Every claim through a redelivery batch delivers the
                        // message again (a deferred one at the same attempt).
                        let shared = &entry.block.shared;
                        shared.counters.bump(crate::stats::Counter::RepeatClaims, 1);
                        (attempt, Arc::clone(entry.block))
                    }
                    // Not pending at the entry's attempt any more (the
                    // entry was stale): nothing to claim, and the cursor is
                    // rightly past it.
                    Claim::Taken => return None,
                }
            }
        };
        let ts_us = block.us_after_key(ts);
        Some(Claimed {
            block,
            bits: ClaimBits::new(entry.slot, attempt, ts_us),
        })
    }

    /// Counts the entries pending now into `count`.
    pub(crate) fn count_pending(&self, now_ns: u64, count: &mut PendingCount) {
        let mut pos = self.cursor();
        while let Some(entry) = self.entry(pos) {
            let slot = entry.block.slot(entry.slot);
            let word = slot.state.load();
            if word.tag() == Tag::Empty {
                break;
            }
            if word.tag() == Tag::Pending && word.attempt() == entry.expected_attempt {
                if entry.expected_attempt == 0 {
                    count.never_claimed += 1;
                }
                if entry
                    .ts
                    .unwrap_or_else(|| entry.block.ts_after_key(word.tick()))
                    <= now_ns
                {
                    count.ready += 1;
                } else {
                    count.delayed += 1;
                }
            }
            pos += 1;
        }
    }
}

/// Counts a first delivery, the retry budget's deposit (only a queue with
/// a budget counts them). Out of line, so that the claim path of a queue
/// without one keeps only the branch.
#[cold]
#[inline(never)]
fn count_first_claim<T>(shared: &crate::shared::Shared<T>) {
    shared.counters.bump(crate::stats::Counter::FirstClaims, 1);
}

#[cfg(test)]
mod tests {
    use super::ClaimBits;
    use crate::state::MAX_ATTEMPTS;

    #[test]
    fn claim_bits_keep_every_field_and_cap_the_timestamp() {
        let bits = ClaimBits::new(63, MAX_ATTEMPTS, ClaimBits::MAX_TS_US);
        assert_eq!(
            (bits.slot(), bits.attempt(), bits.ts_us(), bits.is_live()),
            (63, MAX_ATTEMPTS, ClaimBits::MAX_TS_US, true)
        );
        let settled = bits.settled();
        assert_eq!(
            (
                settled.slot(),
                settled.attempt(),
                settled.ts_us(),
                settled.is_live()
            ),
            (63, MAX_ATTEMPTS, ClaimBits::MAX_TS_US, false)
        );
        let capped = ClaimBits::new(0, 1, u64::MAX);
        assert_eq!(
            (capped.slot(), capped.attempt(), capped.ts_us()),
            (0, 1, ClaimBits::MAX_TS_US)
        );
        // About 407 days of microseconds.
        assert_eq!(ClaimBits::MAX_TS_US / 1_000_000 / 86_400, 407);
    }

    /// A claim is a ticket on the batch's cursor: a consumer whose entry
    /// another claim took loses (changing nothing), one whose entry is
    /// still ahead of the cursor wins it, and no message is skipped.
    #[test]
    fn a_claim_with_a_stale_cursor_loses_and_the_next_message_stays_claimable() {
        use super::Head;
        use crate::{Delivery, Queue};
        let q: Queue<u32> = Queue::new();
        let ids: Vec<_> = (0..3).map(|i| q.produce(i).unwrap()).collect();
        let now = q.shared.clock.precise();
        let deadline = q.shared.claim_deadline(now, true);
        let mut claimed = Vec::new();
        let mut first = true;
        q.shared.index.for_each(|batch| {
            if !std::mem::take(&mut first) {
                return;
            }
            let Head::Ready { from, pos, ts } = batch.head() else {
                panic!("the first message is ready");
            };
            assert_eq!((from, pos), (0, 0));
            claimed.push(batch.claim(from, pos, ts, deadline).expect("wins"));
            // Another consumer read the cursor as 0 too and picked slot 0:
            // it loses, and takes nothing.
            assert!(batch.claim(from, pos, ts, deadline).is_none());
            let Head::Ready { from, pos, ts } = batch.head() else {
                panic!("the second message is still ready");
            };
            assert_eq!((from, pos), (1, 1));
            // One that read the cursor as 0 but picked slot 1 (it saw slot
            // 0 taken) wins it: the cursor was not moved past slot 1.
            claimed.push(batch.claim(0, pos, ts, deadline).expect("wins"));
        });
        for (i, claim) in claimed.into_iter().enumerate() {
            let d = Delivery::new(claim);
            assert_eq!((d.id(), *d, d.attempt()), (ids[i], i as u32, 1));
            d.ack().unwrap();
        }
        for (i, id) in ids.iter().enumerate().skip(2) {
            let d = q.try_consume().unwrap();
            assert_eq!((d.id(), *d, d.attempt()), (*id, i as u32, 1));
            d.ack().unwrap();
        }
        assert!(q.try_consume().is_err());
        assert_eq!(q.stats().acked, 3);
    }
}
