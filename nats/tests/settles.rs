//! What a settle that returned `Ok` promises: it reaches the server even
//! if the handle is closed or dropped right after, without waiting for
//! anything else (each test starts its own `nats-server -js`).

mod support;

use rebound_nats::Queue;
use std::time::Duration;

/// Messages acked right before the handle goes.
const N: usize = 2_000;

fn connect(server: &support::NatsServer) -> Queue<Vec<u8>> {
    Queue::builder(server.url(), "settles")
        .prefetch(64)
        .connect()
        .unwrap()
}

/// Acks every message of a fresh queue of `N`, through `q`.
fn ack_all(q: &Queue<Vec<u8>>) {
    q.produce_batch((0..N).map(|i| i.to_le_bytes().to_vec()))
        .unwrap();
    for _ in 0..N {
        q.consume_timeout(Duration::from_secs(20))
            .unwrap()
            .ack()
            .unwrap();
    }
}

/// The server holds nothing for the queue: every ack arrived.
fn assert_all_acked(server: &support::NatsServer) {
    let fresh = connect(server);
    let stats = fresh.stats().unwrap();
    assert_eq!((stats.ready, stats.in_flight), (0, 0), "acks lost");
    assert!(fresh.try_consume().unwrap_err().is_empty());
}

#[test]
fn acks_reach_the_server_when_the_last_handle_drops() {
    let server = support::NatsServer::start();
    let q = connect(&server);
    ack_all(&q);
    drop(q);
    assert_all_acked(&server);
}

/// Set in the child process of the test below: the server's URL.
const CHILD: &str = "REBOUND_NATS_SETTLES_CHILD";

#[test]
fn acks_reach_the_server_when_the_handle_is_closed_and_the_process_exits() {
    if let Ok(url) = std::env::var(CHILD) {
        // The child: ack everything, close, and exit at once, running no
        // destructor (so the drop's flush cannot help).
        let q: Queue<Vec<u8>> = Queue::builder(url, "settles")
            .prefetch(64)
            .connect()
            .unwrap();
        ack_all(&q);
        q.close();
        std::process::exit(0);
    }
    let server = support::NatsServer::start();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acks_reach_the_server_when_the_handle_is_closed_and_the_process_exits",
        ])
        .env(CHILD, server.url())
        .status()
        .unwrap();
    assert!(status.success());
    assert_all_acked(&server);
}
