//! Certificates rotated on disk under load while leaders die: each broker
//! reloads its new certificate and key without a restart, and peers and
//! clients reconnect to it (and it to them) with the new ones. The checker
//! holds the history to the usual rules; the test also checks every broker
//! really reloaded.

use std::time::{Duration, Instant};

use super::{PARTITIONS, TOPIC, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn rotate_certificates_while_leaders_die() {
    run(
        "rotate-certificates",
        "[security]\ntls_reload_interval_ms = 300\n",
        |mut c, until, _| async move {
            let mut round = 0u64;
            while round < 3 || Instant::now() < until {
                let rotated = round % 3 + 1;
                c.rotate_broker_cert(rotated);
                tokio::time::sleep(Duration::from_millis(800)).await;
                // Kill a leader elsewhere: its peers and the clients
                // reconnect, handshaking with the rotated broker's new
                // certificate, and the restarted one dials it afresh.
                let leader = c.leader(TOPIC, (round as u32) % PARTITIONS).await;
                if leader != rotated {
                    c.kill(leader);
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    c.restart(leader);
                }
                tokio::time::sleep(Duration::from_millis(1000)).await;
                round += 1;
            }
            for id in 1..=3 {
                let log = std::fs::read_to_string(c.log_path(id)).unwrap_or_default();
                assert!(
                    log.contains("TLS certificate reloaded"),
                    "broker {id} never reloaded its rotated certificate"
                );
            }
            c
        },
    )
    .await;
}
