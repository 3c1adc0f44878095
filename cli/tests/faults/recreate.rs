//! A topic deleted and created again under load (issue "A recreated topic
//! is a new topic"), next to the suite's workload: a side topic is written
//! in generations (each a new topic by the same name), read by a consumer
//! group that keeps running across every delete and create, and a broker
//! is down during every other delete (so deleting has to finish when it
//! returns). `strand_checker::generations` checks that every acknowledged
//! record of every generation is read, where it was acknowledged, and
//! never after a newer generation's; the suite's checker judges the main
//! workload as for every nemesis.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_checker::generations::{GenerationRead, GenerationWrite, check_generations};
use strand_client::{Admin, OffsetReset, ProducerRecord};
use tokio::sync::watch;

use super::run;
use crate::support::Endpoint;

const SIDE: &str = "side";
const RECORDS: u64 = 200;

/// Reads the side topic as a group member until told to stop, recording
/// every record in the order it was processed and committing after each
/// poll (commits refused for a deleted topic are expected and ignored).
async fn reader(ep: Endpoint, reads: Arc<Mutex<Vec<GenerationRead>>>, mut stop: watch::Receiver<bool>) {
    let mut c = ep
        .consumer()
        .group("side-readers")
        .session_timeout(Duration::from_secs(3))
        .auto_commit(None)
        .auto_offset_reset(OffsetReset::Earliest)
        .max_wait(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(3))
        .build()
        .await
        .expect("side consumer");
    c.subscribe(&[SIDE]).await.expect("subscribe");
    while !*stop.borrow_and_update() {
        let records = match c.poll().await {
            Ok(r) => r,
            Err(_) => {
                // The topic is gone, or was created again (UNKNOWN_TOPIC,
                // UNKNOWN_TOPIC_ID), or a broker is down: go on polling.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        for r in &records {
            let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            let Some((g, s)) = value.strip_prefix('g').and_then(|v| v.split_once('-')) else {
                continue;
            };
            if let (Ok(generation), Ok(seq)) = (g.parse(), s.parse()) {
                reads.lock().expect("reads").push(GenerationRead {
                    generation,
                    seq,
                    partition: r.partition,
                    offset: r.offset,
                });
            }
        }
        if !records.is_empty() {
            let _ = c.commit().await;
        }
    }
    let _ = c.close().await;
}

async fn create_side(a: &Admin) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.create_topic(SIDE, 2, 3, BTreeMap::new()).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("recreate: create {SIDE}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create {SIDE}: {e}"),
        }
    }
}

async fn delete_side(a: &Admin) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match a.delete_topic(SIDE).await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("recreate: delete {SIDE}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("delete {SIDE}: {e}"),
        }
    }
}

/// Writes one generation's records; returns those acknowledged.
async fn write_generation(ep: Endpoint, generation: u32) -> Vec<GenerationWrite> {
    let p = ep.producer().build().await.expect("side producer");
    let mut out = Vec::new();
    for seq in 0..RECORDS {
        let value = format!("g{generation}-{seq}");
        let r = ProducerRecord::new(SIDE, Bytes::from(value)).key(Bytes::from(format!("k{}", seq % 7)));
        if let Ok(m) = p.send_and_wait(r).await
            && let Some(offset) = m.offset
        {
            out.push(GenerationWrite {
                generation,
                seq,
                partition: m.partition,
                offset,
            });
        }
    }
    let _ = p.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: the fault suite, run by .ci/run"]
async fn a_topic_deleted_and_created_again_while_a_group_reads_it() {
    run("recreate", "", |mut c, until, _| async move {
        let a = c.endpoint().admin().await.expect("admin");
        create_side(&a).await;
        let reads = Arc::new(Mutex::new(Vec::new()));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(reader(c.endpoint(), Arc::clone(&reads), rx));
        let mut writes: Vec<GenerationWrite> = Vec::new();
        let mut generation = 0u32;
        loop {
            let written = write_generation(c.endpoint(), generation).await;
            // Wait (bounded) until the reader has every acknowledged record
            // of this generation; what it never reads the checker reports.
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let got = reads
                    .lock()
                    .expect("reads")
                    .iter()
                    .filter(|r| r.generation == generation)
                    .count();
                if got >= written.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            writes.extend(written);
            generation += 1;
            if Instant::now() >= until && generation >= 2 {
                break;
            }
            // Every other delete happens while a broker is down.
            let down = generation.is_multiple_of(2).then(|| u64::from(generation / 2 % 3) + 1);
            if let Some(d) = down {
                c.kill(d);
            }
            let live = (1..=3).find(|&i| Some(i) != down).expect("a live broker");
            let a = c.admin_of(&c.addr(live)).await.expect("admin");
            delete_side(&a).await;
            if let Some(d) = down {
                c.restart(d);
                c.wait_ready().await;
            }
            create_side(&a).await;
        }
        let _ = stop.send(true);
        let _ = task.await;
        let reads = reads.lock().expect("reads").clone();
        let anomalies = check_generations(&writes, &reads);
        eprintln!(
            "recreate: {generation} generation(s) of {SIDE}, {} records acknowledged, {} read, {} anomalies",
            writes.len(),
            reads.len(),
            anomalies.len()
        );
        assert!(
            anomalies.is_empty(),
            "recreate: {:?}",
            &anomalies[..anomalies.len().min(10)]
        );
        c
    })
    .await;
}
