//! `Builder`: a queue's settings, checked.

use crate::backoff::Backoff;
use crate::error::BuildError;
use crate::queue::Queue;
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
            _payload: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Builder<T> {
    /// How long a delivery stays valid without being settled or extended
    /// (the visibility timeout). Default 30 s. Range: 1 ms to about a year.
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
        let Config {
            lease,
            max_attempts,
            ..
        } = self.config;
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
        Queue::with_config(self.config)
    }

    /// Builds the queue, bringing settings out of range to the nearest valid
    /// value (`max_attempts` 0 becomes 1; a zero lease becomes 1 ms).
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
        match self.try_build() {
            Ok(queue) => queue,
            Err(e) => panic!("rebound: {e}"),
        }
    }
}
