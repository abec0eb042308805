//! The `$JS.ACK` reply subject of a JetStream delivery: the two numbers a
//! delivery needs from it (the delivery count and the stream sequence),
//! read without the rest (`async_nats`'s `Message::info` also parses the
//! publish time into a date, which costs more than everything else a
//! consume does with the subject).
//!
//! The subject has one of the two forms of the server's ADR-15:
//! `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`
//! (7 tokens after the prefix), or, from servers that know domains,
//! `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>[.<token>...]`
//! (9 or more). Stream and consumer names contain no `.`.

/// What a delivery reads from its reply subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The server's delivery count: 1 the first time.
    pub(crate) delivered: u64,
    /// The message's sequence in its stream.
    pub(crate) stream_sequence: u64,
}

const PREFIX: &str = "$JS.ACK.";

/// Reads `reply`, or `None` if it is not a JetStream ack subject.
pub(crate) fn parse(reply: &str) -> Option<Reply> {
    let rest = reply.strip_prefix(PREFIX)?.as_bytes();
    // One pass: where the first 6 dots are (token `k` ends at dot `k`),
    // and how many there are, which tells the forms apart.
    let mut dots = [0; 6];
    let mut n = 0;
    for (at, &byte) in rest.iter().enumerate() {
        if byte == b'.' {
            if let Some(dot) = dots.get_mut(n) {
                *dot = at;
            }
            n += 1;
        }
    }
    let delivered = match n + 1 {
        7 => 2,
        9.. => 4,
        _ => return None,
    };
    let token = |k: usize| &rest[dots[k - 1] + 1..dots[k]];
    Some(Reply {
        delivered: number(token(delivered))?,
        stream_sequence: number(token(delivered + 1))?,
    })
}

/// A decimal `u64`: at least one digit, nothing else, no overflow.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::{Reply, parse};

    #[test]
    fn the_short_form() {
        assert_eq!(
            parse("$JS.ACK.jobs.jobs-workers.3.42.40.1733470000000000000.7"),
            Some(Reply {
                delivered: 3,
                stream_sequence: 42
            })
        );
    }

    #[test]
    fn the_long_form_with_and_without_a_trailing_token() {
        let expected = Some(Reply {
            delivered: 1,
            stream_sequence: 9,
        });
        assert_eq!(
            parse("$JS.ACK._.ACCHASH.jobs.jobs-workers.1.9.9.1733470000000000000.0"),
            expected
        );
        assert_eq!(
            parse("$JS.ACK.hub.ACCHASH.jobs.jobs-workers.1.9.9.1733470000000000000.0.rnd"),
            expected
        );
        assert_eq!(
            parse("$JS.ACK.hub.ACCHASH.jobs.jobs-workers.1.9.9.1733470000000000000.0.rnd.more"),
            expected
        );
    }

    #[test]
    fn anything_else_is_refused() {
        assert_eq!(parse("_INBOX.abc"), None);
        assert_eq!(parse("$JS.ACK.jobs.jobs-workers.3.42"), None);
        assert_eq!(parse("$JS.ACK.a.b.c.d.e.f.g.h"), None);
        assert_eq!(
            parse("$JS.ACK.jobs.jobs-workers.x.42.40.1733470000000000000.7"),
            None
        );
        assert_eq!(
            parse("$JS.ACK.jobs.jobs-workers..42.40.1733470000000000000.7"),
            None
        );
        assert_eq!(
            parse("$JS.ACK.jobs.jobs-workers.18446744073709551616.42.40.1.7"),
            None
        );
    }

    #[test]
    fn the_largest_numbers() {
        assert_eq!(
            parse("$JS.ACK.jobs.w.18446744073709551615.18446744073709551615.0.1.0"),
            Some(Reply {
                delivered: u64::MAX,
                stream_sequence: u64::MAX
            })
        );
    }
}
