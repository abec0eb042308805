//! How `produce_after` and `defer` reach the work stream on each server:
//! through the delayed stream and its mover on nats-server 2.9, through
//! message schedules on 2.12 (the server that `REBOUND_NATS_SERVER_2_12`
//! names; without it the 2.12 tests are listed as ignored, with the
//! reason), and what connecting does to a queue an older rebound-nats made
//! on a 2.12 server.

mod support;

use async_nats::jetstream::{self, consumer, stream};
use rebound_nats::{ConnectError, Queue};
use std::time::{Duration, Instant};

/// Long enough for anything to arrive on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(20);

/// A raw JetStream client, for what the queue's API does not show.
struct Raw {
    runtime: tokio::runtime::Runtime,
    js: jetstream::Context,
}

impl Raw {
    fn connect(url: &str) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let js =
            runtime.block_on(async { jetstream::new(async_nats::connect(url).await.unwrap()) });
        Self { runtime, js }
    }

    /// Messages in stream `name`.
    fn messages(&self, name: &str) -> u64 {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(name).await.unwrap();
            stream.info().await.unwrap().state.messages
        })
    }

    fn stream_config(&self, name: &str) -> stream::Config {
        self.runtime.block_on(async {
            let mut stream = self.js.get_stream(name).await.unwrap();
            stream.info().await.unwrap().config.clone()
        })
    }

    fn filter(&self, name: &str, consumer: &str) -> String {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(name).await.unwrap();
            let mut consumer: consumer::PullConsumer = stream.get_consumer(consumer).await.unwrap();
            consumer.info().await.unwrap().config.filter_subject.clone()
        })
    }

    /// Makes the work stream and consumer of queue `name` as rebound-nats
    /// did before it used schedules, with `subjects`, and puts `payload`
    /// in it.
    fn make_old_queue(&self, name: &str, subjects: Vec<String>, payload: &'static str) {
        self.runtime.block_on(async {
            let work = self
                .js
                .create_stream(stream::Config {
                    name: name.to_string(),
                    subjects,
                    retention: stream::RetentionPolicy::WorkQueue,
                    ..Default::default()
                })
                .await
                .unwrap();
            let workers = format!("{name}-workers");
            work.create_consumer(consumer::pull::Config {
                durable_name: Some(workers),
                ack_policy: consumer::AckPolicy::Explicit,
                max_deliver: -1,
                max_ack_pending: -1,
                ..Default::default()
            })
            .await
            .unwrap();
            self.js
                .publish(format!("{name}.work"), payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
    }
}

fn connect(server: &support::NatsServer, name: &str) -> Queue<String> {
    Queue::builder(server.url(), name).connect().unwrap()
}

#[test]
fn on_2_9_produce_after_and_defer_go_through_the_delayed_stream() {
    let server = support::NatsServer::start();
    let q = connect(&server, "late");
    assert!(!support::has_schedules(q.server_version()));
    let raw = Raw::connect(server.url());
    let id = q
        .produce_after("later".to_string(), Duration::from_millis(300))
        .unwrap();
    assert!(id.to_string().starts_with('d'), "{id}");
    assert_eq!(q.stats().unwrap().delayed, 1);
    let d = q.consume_timeout(PATIENCE).unwrap();
    assert_eq!((d.as_str(), d.id()), ("later", id));
    // Long enough to be still waiting when looked at, on a loaded machine.
    let delay = Duration::from_secs(1);
    let deferred = Instant::now();
    d.defer(delay).unwrap();
    assert_eq!(raw.messages("late-delayed"), 1);
    let d = q.consume_timeout(PATIENCE).unwrap();
    assert!(deferred.elapsed() >= delay, "delivered early");
    assert_eq!((d.id(), d.attempt()), (id, 1));
    d.ack().unwrap();
}

#[test]
#[cfg_attr(
    not(rebound_nats_2_12),
    ignore = "needs nats-server 2.12: set REBOUND_NATS_SERVER_2_12 (README, Testing)"
)]
fn on_2_12_produce_after_and_defer_are_schedules() {
    let server = support::NatsServer::start_2_12();
    let q = connect(&server, "late");
    assert!(support::has_schedules(q.server_version()));
    let raw = Raw::connect(server.url());
    let config = raw.stream_config("late");
    assert!(config.allow_message_schedules);
    assert_eq!(config.subjects, ["late.work", "late.sched.>"]);
    assert_eq!(raw.filter("late", "late-workers"), "late.work");

    // Long enough to be still scheduled when looked at, on a loaded machine.
    let delay = Duration::from_secs(1);
    let produced = Instant::now();
    let first = q.produce_after("a".to_string(), delay).unwrap();
    let second = q.produce_after("b".to_string(), delay).unwrap();
    // Minted by the handle: its nonce, then its count.
    let (text1, text2) = (first.to_string(), second.to_string());
    assert!(text1.starts_with('s') && text1.len() == 19, "{text1}");
    assert_eq!(text1[..18], text2[..18]);
    assert_eq!(second.sequence(), first.sequence() + 1);
    assert_eq!(text1.parse(), Ok(first));
    // In the work stream as schedules, none in the delayed stream; not
    // ready to the consumer.
    assert_eq!(raw.messages("late-delayed"), 0);
    assert_eq!(raw.messages("late"), 2);
    let stats = q.stats().unwrap();
    assert_eq!((stats.ready, stats.delayed), (0, 2));

    let mut ids = Vec::new();
    for _ in 0..2 {
        let d = q.consume_timeout(PATIENCE).unwrap();
        assert!(produced.elapsed() >= delay, "delivered early");
        assert_eq!(d.attempt(), 1);
        ids.push((d.to_string(), d.id()));
        if d.as_str() == "a" {
            d.ack().unwrap();
        } else {
            let deferred = Instant::now();
            d.defer(delay).unwrap();
            assert_eq!(raw.messages("late-delayed"), 0);
            let d = q.consume_timeout(PATIENCE).unwrap();
            assert!(
                deferred.elapsed() >= delay,
                "a deferred message came back early"
            );
            assert_eq!((d.as_str(), d.id(), d.attempt()), ("b", second, 1));
            d.ack().unwrap();
        }
    }
    ids.sort();
    assert_eq!(ids, [("a".to_string(), first), ("b".to_string(), second)]);
    // Fired schedules are gone: once the server has the acks (a settle is
    // not confirmed), nothing is left.
    let start = Instant::now();
    while raw.messages("late") > 0 && start.elapsed() < PATIENCE {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(raw.messages("late"), 0);
    assert_eq!(q.stats().unwrap().delayed, 0);
}

#[test]
#[cfg_attr(
    not(rebound_nats_2_12),
    ignore = "needs nats-server 2.12: set REBOUND_NATS_SERVER_2_12 (README, Testing)"
)]
fn on_2_12_a_queue_an_older_rebound_nats_made_is_updated() {
    let server = support::NatsServer::start_2_12();
    let raw = Raw::connect(server.url());
    raw.make_old_queue("old", vec!["old.work".to_string()], "waiting");
    assert_eq!(raw.filter("old", "old-workers"), "");

    let q = connect(&server, "old");
    let config = raw.stream_config("old");
    assert!(config.allow_message_schedules);
    assert_eq!(config.subjects, ["old.work", "old.sched.>"]);
    assert_eq!(raw.filter("old", "old-workers"), "old.work");
    // What was there is still there.
    let d = q.consume_timeout(PATIENCE).unwrap();
    assert_eq!(d.as_str(), "waiting");
    d.ack().unwrap();
    let delay = Duration::from_millis(200);
    let produced = Instant::now();
    let id = q.produce_after("later".to_string(), delay).unwrap();
    let d = q.consume_timeout(PATIENCE).unwrap();
    assert!(produced.elapsed() >= delay, "delivered early");
    assert_eq!((d.as_str(), d.id()), ("later", id));
    d.ack().unwrap();
    // A second process finds it as it is.
    let again = connect(&server, "old");
    again.produce("x".to_string()).unwrap();
    assert_eq!(again.consume_timeout(PATIENCE).unwrap().as_str(), "x");
}

#[test]
#[cfg_attr(
    not(rebound_nats_2_12),
    ignore = "needs nats-server 2.12: set REBOUND_NATS_SERVER_2_12 (README, Testing)"
)]
fn on_2_12_a_stream_that_cannot_take_the_schedules_is_a_typed_error() {
    let server = support::NatsServer::start_2_12();
    let raw = Raw::connect(server.url());
    // A subject of the stream overlaps the schedules': the update is refused.
    raw.make_old_queue(
        "odd",
        vec!["odd.work".to_string(), "odd.sched.x".to_string()],
        "waiting",
    );
    let err = Queue::<String>::builder(server.url(), "odd")
        .connect()
        .unwrap_err();
    assert!(matches!(err, ConnectError::Schedules(_)), "{err}");
    assert!(err.to_string().contains("message schedules"), "{err}");
    // Nothing was changed.
    assert_eq!(
        raw.stream_config("odd").subjects,
        ["odd.work", "odd.sched.x"]
    );
    assert_eq!(raw.messages("odd"), 1);
}
