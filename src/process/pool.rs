//! `Pool`: the rayon thread pool that runs a processor's handlers.

use crate::sync::Arc;
use rayon::ThreadPool;
use std::fmt;

/// Which rayon thread pool runs the handlers: rayon's global pool, or one
/// you built (shared through an [`Arc`], since the processor keeps spawning
/// onto it for as long as it runs).
///
/// ```
/// use rebound::Pool;
/// use std::sync::Arc;
///
/// let global = Pool::global();
/// assert_eq!(global.threads(), rayon::current_num_threads());
///
/// let mine = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap());
/// assert_eq!(Pool::from(&mine).threads(), 3);
/// ```
#[derive(Clone)]
pub struct Pool {
    inner: Option<Arc<ThreadPool>>,
}

impl Pool {
    /// rayon's global pool (the one `rayon::spawn` and parallel iterators
    /// use), sized by `RAYON_NUM_THREADS` or the number of CPUs.
    ///
    /// ```
    /// assert!(rebound::Pool::global().threads() >= 1);
    /// ```
    pub fn global() -> Self {
        Pool { inner: None }
    }

    /// How many threads the pool has: the default concurrency of a processor
    /// running on it.
    ///
    /// ```
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    /// assert_eq!(rebound::Pool::from(pool).threads(), 2);
    /// ```
    pub fn threads(&self) -> usize {
        match &self.inner {
            Some(pool) => pool.current_num_threads(),
            // Called from outside any pool, this is the global pool's size.
            None => rayon::current_num_threads(),
        }
    }

    /// Runs `job` on the pool, fire and forget.
    pub(crate) fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        match &self.inner {
            Some(pool) => pool.spawn(job),
            None => rayon::spawn(job),
        }
    }
}

impl From<Arc<ThreadPool>> for Pool {
    /// A pool you built and share.
    ///
    /// ```
    /// let pool = std::sync::Arc::new(rayon::ThreadPoolBuilder::new().build().unwrap());
    /// let _ = rebound::Pool::from(pool);
    /// ```
    fn from(pool: Arc<ThreadPool>) -> Self {
        Pool { inner: Some(pool) }
    }
}

impl From<&Arc<ThreadPool>> for Pool {
    /// A pool you built and share; the `Arc` is cloned.
    ///
    /// ```
    /// let pool = std::sync::Arc::new(rayon::ThreadPoolBuilder::new().build().unwrap());
    /// let _ = rebound::Pool::from(&pool);
    /// assert!(pool.current_num_threads() >= 1); // still yours
    /// ```
    fn from(pool: &Arc<ThreadPool>) -> Self {
        Pool {
            inner: Some(Arc::clone(pool)),
        }
    }
}

impl From<ThreadPool> for Pool {
    /// A pool you hand over to the processor.
    ///
    /// ```
    /// let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    /// assert_eq!(rebound::Pool::from(pool).threads(), 1);
    /// ```
    fn from(pool: ThreadPool) -> Self {
        Pool {
            inner: Some(Arc::new(pool)),
        }
    }
}

impl From<&Pool> for Pool {
    /// Another handle to the same pool.
    ///
    /// ```
    /// let pool = rebound::Pool::global();
    /// assert_eq!(rebound::Pool::from(&pool).threads(), pool.threads());
    /// ```
    fn from(pool: &Pool) -> Self {
        pool.clone()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Some(_) => f
                .debug_struct("Pool")
                .field("threads", &self.threads())
                .finish(),
            None => f.write_str("Pool::Global"),
        }
    }
}
