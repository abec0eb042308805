//! `Builder`: a JetStream queue's settings, and connecting.

use crate::error::{ConnectError, NatsError};
use crate::id::Mint;
use crate::jetstream::{self, Counters, Inner, Settings};
use crate::queue::Queue;
use crate::schedule;
use rebound::{Backoff, Payload};
use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest lease: JetStream keeps `AckWait` in nanoseconds in an `i64`;
/// this is far below that, as for the in-memory queue.
const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// Configures a JetStream queue; made by [`Queue::builder`].
///
/// ```no_run
/// use rebound::Backoff;
/// use rebound_nats::Queue;
/// use std::time::Duration;
///
/// let q: Queue<Vec<u8>> = Queue::builder("nats://127.0.0.1:4222", "thumbnails")
///     .lease(Duration::from_secs(60))
///     .backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(30)))
///     .max_attempts(8)
///     .prefetch(16)
///     .connect()
///     .unwrap();
/// ```
pub struct Builder<T> {
    url: String,
    name: String,
    lease: Duration,
    margin: Option<Duration>,
    backoff: Backoff,
    max_attempts: u32,
    prefetch: usize,
    memory: bool,
    payload: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("lease", &self.lease)
            .field("max_attempts", &self.max_attempts)
            .field("prefetch", &self.prefetch)
            .finish_non_exhaustive()
    }
}

impl<T: Payload> Builder<T> {
    pub(crate) fn new(url: String, name: String) -> Self {
        Self {
            url,
            name,
            lease: Duration::from_secs(30),
            margin: None,
            backoff: Backoff::default(),
            max_attempts: 16,
            prefetch: 1,
            memory: false,
            payload: PhantomData,
        }
    }

    /// How long a delivery holds its message before the server redelivers
    /// it: the consumer's `AckWait`. Default 30 s. Between 10 ms and 24 h.
    ///
    /// ```no_run
    /// # use rebound_nats::Queue;
    /// let q: Queue<Vec<u8>> = Queue::builder("nats://127.0.0.1:4222", "jobs")
    ///     .lease(std::time::Duration::from_secs(5)).connect().unwrap();
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long before the server's `AckWait` ends a delivery stops acting
    /// (its settles return `LeaseExpired`): covers the time the message
    /// took to arrive and the settle takes to reach the server. Default: a
    /// tenth of the lease. Must be shorter than the lease.
    ///
    /// ```no_run
    /// # use rebound_nats::Queue;
    /// let q: Queue<Vec<u8>> = Queue::builder("nats://127.0.0.1:4222", "jobs")
    ///     .fence_margin(std::time::Duration::from_secs(2)).connect().unwrap();
    /// ```
    pub fn fence_margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The delay before a rolled-back message comes back, by attempt (sent
    /// as the delay of a negative acknowledgement). Default: the in-memory
    /// queue's.
    ///
    /// ```no_run
    /// # use rebound_nats::Queue;
    /// let q: Queue<Vec<u8>> = Queue::builder("nats://127.0.0.1:4222", "jobs")
    ///     .backoff(rebound::Backoff::fixed(std::time::Duration::from_secs(1))).connect().unwrap();
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How many deliveries a message gets before it is dead-lettered.
    /// Default 16. At least 1.
    ///
    /// ```no_run
    /// # use rebound_nats::Queue;
    /// let q: Queue<Vec<u8>> = Queue::builder("nats://127.0.0.1:4222", "jobs").max_attempts(3).connect().unwrap();
    /// ```
    pub fn max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = max;
        self
    }

    /// How many ready messages one pull fetches (default 1). More saves
    /// round trips under load; the extra messages wait in this process
    /// with their lease running until a consumer takes them. At least 1.
    ///
    /// ```no_run
    /// # use rebound_nats::Queue;
    /// let q: Queue<Vec<u8>> = Queue::builder("nats://127.0.0.1:4222", "jobs").prefetch(64).connect().unwrap();
    /// ```
    pub fn prefetch(mut self, messages: usize) -> Self {
        self.prefetch = messages;
        self
    }

    /// Keeps the queue's streams in the server's memory instead of on disk
    /// (faster; lost if the server restarts). Default: on disk. Applies
    /// when the streams are created.
    ///
    /// ```no_run
    /// # use rebound_nats::Queue;
    /// let q: Queue<Vec<u8>> = Queue::builder("nats://127.0.0.1:4222", "scratch").in_memory().connect().unwrap();
    /// ```
    pub fn in_memory(mut self) -> Self {
        self.memory = true;
        self
    }

    fn settings(&self) -> Result<Settings, ConnectError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(ConnectError::Name(self.name.clone()));
        }
        if self.lease < Duration::from_millis(10) || self.lease > MAX_LEASE {
            return Err(ConnectError::Setting(format!(
                "lease must be between 10ms and {MAX_LEASE:?}, got {:?}",
                self.lease
            )));
        }
        let margin = self.margin.unwrap_or(self.lease / 10);
        if margin >= self.lease {
            return Err(ConnectError::Setting(format!(
                "fence_margin {margin:?} must be shorter than the lease {:?}",
                self.lease
            )));
        }
        if self.max_attempts == 0 {
            return Err(ConnectError::Setting(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.prefetch == 0 {
            return Err(ConnectError::Setting("prefetch must be at least 1".into()));
        }
        Ok(Settings {
            lease: self.lease,
            margin,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            prefetch: self.prefetch,
            memory: self.memory,
        })
    }

    /// Connects, and creates the queue's streams and consumer unless they
    /// exist (every process that connects with the same name shares them).
    /// On a server with message schedules (nats-server 2.12 and later) the
    /// work stream takes them, and one made without them by an older
    /// rebound-nats is updated (see the README, "Scaling out").
    ///
    /// # Errors
    /// [`ConnectError::Name`] or [`ConnectError::Setting`] for a bad
    /// setting; [`ConnectError::Runtime`] if the client's runtime could not
    /// start; [`ConnectError::Nats`] if the server could not be reached or
    /// refused a stream or the consumer (JetStream off, or the streams exist
    /// with other settings); [`ConnectError::Schedules`] if the server has
    /// schedules and refused to update such a stream or its consumer.
    ///
    /// ```no_run
    /// let q = rebound_nats::Queue::<String>::builder("nats://127.0.0.1:4222", "jobs").connect();
    /// if let Err(e) = &q {
    ///     eprintln!("{e}");
    /// }
    /// ```
    pub fn connect(self) -> Result<Queue<T>, ConnectError> {
        let settings = self.settings()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rebound-nats")
            .enable_all()
            .build()
            .map_err(|e| ConnectError::Runtime(e.kind()))?;
        let name = self.name;
        let url = self.url;
        let (client, js, consumer, mover, schedules) = runtime.block_on(async {
            let client = async_nats::connect(url.as_str())
                .await
                .map_err(|e| ConnectError::Nats(NatsError::from_error("connect", e)))?;
            let js = async_nats::jetstream::new(client.clone());
            let schedules = schedule::supported(&client.server_info().version);
            let (consumer, mover) =
                jetstream::open(js.clone(), &name, &settings, schedules).await?;
            Ok::<_, ConnectError>((client, js, consumer, mover, schedules))
        })?;
        let inner = Inner {
            js,
            work_subject: format!("{name}.work"),
            delayed_subject: format!("{name}.delayed"),
            dead_subject: format!("{name}.dead"),
            schedules,
            mint: Mint::new(),
            server_version: client.server_info().version,
            name,
            consumer,
            settings,
            buffer: Mutex::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
            counters: Counters::default(),
            mover: Some(mover),
            runtime,
        };
        Ok(Queue {
            inner: Arc::new(inner),
            payload: PhantomData,
        })
    }
}
