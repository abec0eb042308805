//! The async consumers (feature `async`): `Queue::consume_async`,
//! `Queue::consume_batch_async` and `Queue::deliveries`, the futures and
//! the stream they return.

use crate::delivery::Delivery;
use crate::error::Closed;
use crate::index::NextDue;
use crate::queue::Queue;
use crate::wait_async::TaskWait;
use futures_core::Stream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Available with the `async` feature. Waiting tasks are woken by the
/// producers and by the queue's own redeliverer thread (for messages that
/// fall due later), so these work on any executor (tokio, smol,
/// async-executor, `futures::executor`) and need no runtime timer.
///
/// # Cancel safety
///
/// Every future here, and the stream's `next()`, is cancel safe. A message
/// is claimed only in the poll that returns it, so dropping a future before
/// it completes (a `select!` branch that loses, a timeout, an aborted task)
/// claims nothing and loses nothing. A waiting task that was woken for a
/// message and is dropped before it acted on the wake-up passes the wake-up
/// on to the next waiting task, so no other consumer misses the message. A
/// [`Delivery`] that was returned and then dropped unsettled (say, by a
/// task cancelled while handling it) rolls back, as everywhere.
impl<T: Send + Sync + 'static> Queue<T> {
    /// Claims the ready message with the earliest timestamp, waiting as a
    /// task until one is ready: the async form of [`Queue::consume`]. Cancel
    /// safe (see above).
    ///
    /// # Errors
    /// [`Closed`] once the queue is closed and nothing is pending or in
    /// flight.
    ///
    /// ```
    /// use futures::executor::block_on;
    ///
    /// let q = rebound::Queue::new();
    /// q.produce("job").unwrap();
    /// q.close();
    /// block_on(async {
    ///     let d = q.consume_async().await.unwrap();
    ///     assert_eq!(*d, "job");
    ///     d.ack().unwrap();
    ///     assert_eq!(q.consume_async().await.unwrap_err(), rebound::Closed);
    /// });
    /// ```
    pub fn consume_async(&self) -> impl Future<Output = Result<Delivery<T>, Closed>> + Send {
        Take {
            queue: self,
            wait: TaskWait::new(),
            poll: move |precise| self.poll(precise),
        }
    }

    /// Claims up to `max` ready messages, earliest first, waiting as a task
    /// until at least one is ready: the async form of
    /// [`Queue::consume_batch`]. `max == 0` returns an empty batch at once.
    /// Cancel safe (see above).
    ///
    /// # Errors
    /// [`Closed`] once the queue is closed and nothing is pending or in
    /// flight.
    ///
    /// ```
    /// use futures::executor::block_on;
    ///
    /// let q = rebound::Queue::new();
    /// q.produce_batch(0..10).unwrap();
    /// block_on(async {
    ///     let batch = q.consume_batch_async(4).await.unwrap();
    ///     assert_eq!(batch.iter().map(|d| **d).collect::<Vec<_>>(), [0, 1, 2, 3]);
    ///     for d in batch {
    ///         d.ack().unwrap();
    ///     }
    /// });
    /// ```
    pub fn consume_batch_async(
        &self,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery<T>>, Closed>> + Send {
        Take {
            queue: self,
            wait: TaskWait::new(),
            poll: move |precise| self.poll_many(precise, max),
        }
    }

    /// Every message, as a [`Stream`] of deliveries that ends once the
    /// queue is closed and drained (nothing pending or in flight, rolled
    /// back messages included). Each item is claimed as by
    /// [`Self::consume_async`]; settle it as any [`Delivery`]. Dropping
    /// the stream, or a `next()` that has not completed, is cancel safe
    /// (see above).
    ///
    /// ```
    /// use futures::executor::block_on;
    /// use futures::StreamExt;
    ///
    /// let q = rebound::Queue::new();
    /// q.produce_batch(1..=3).unwrap();
    /// q.close();
    /// let sum = block_on(q.deliveries().fold(0, |sum, d| async move {
    ///     let n = *d;
    ///     d.ack().unwrap();
    ///     sum + n
    /// }));
    /// assert_eq!(sum, 6);
    /// ```
    pub fn deliveries(&self) -> impl Stream<Item = Delivery<T>> + Send {
        Deliveries {
            take: Some(Take {
                queue: self,
                wait: TaskWait::new(),
                poll: move |precise| self.poll(precise),
            }),
        }
    }
}

/// A pending take: the queue, the task's wait state, and the poll that
/// takes what the caller asked for.
struct Take<'a, T, F> {
    queue: &'a Queue<T>,
    wait: TaskWait<'a>,
    poll: F,
}

impl<'a, T, F, R> Take<'a, T, F>
where
    T: Send + Sync + 'static,
    F: Fn(bool) -> Result<R, NextDue>,
{
    fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<Result<R, Closed>> {
        self.wait.poll_take(cx, self.queue, &self.poll)
    }
}

impl<T, F, R> Future for Take<'_, T, F>
where
    T: Send + Sync + 'static,
    F: Fn(bool) -> Result<R, NextDue> + Unpin,
{
    type Output = Result<R, Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().poll_take(cx)
    }
}

/// The stream of [`Queue::deliveries`]; `None` once it has ended.
struct Deliveries<'a, T, F> {
    take: Option<Take<'a, T, F>>,
}

impl<T, F> Stream for Deliveries<'_, T, F>
where
    T: Send + Sync + 'static,
    F: Fn(bool) -> Result<Delivery<T>, NextDue> + Unpin,
{
    type Item = Delivery<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery<T>>> {
        let this = self.get_mut();
        let Some(take) = this.take.as_mut() else {
            return Poll::Ready(None);
        };
        match take.poll_take(cx) {
            Poll::Ready(Ok(delivery)) => Poll::Ready(Some(delivery)),
            Poll::Ready(Err(Closed)) => {
                this.take = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
