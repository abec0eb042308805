//! Sets `cfg(rebound_nats_2_12)` when `REBOUND_NATS_SERVER_2_12` names a
//! nats-server 2.12 binary, so that the tests of message schedules run;
//! without it they are listed as ignored, with the reason (README,
//! "Testing"). The library itself does not look at the cfg.

fn main() {
    println!("cargo::rerun-if-env-changed=REBOUND_NATS_SERVER_2_12");
    println!("cargo::rustc-check-cfg=cfg(rebound_nats_2_12)");
    if std::env::var_os("REBOUND_NATS_SERVER_2_12").is_some_and(|v| !v.is_empty()) {
        println!("cargo::rustc-cfg=rebound_nats_2_12");
    }
}
