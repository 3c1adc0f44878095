//! Produces 10 keyed records and reads them back.
//!
//! Run a broker first (`cargo run -- broker`), then:
//!
//! ```text
//! cargo run -p strand-client --example produce_consume
//! STRAND_BOOTSTRAP=host:port cargo run -p strand-client --example produce_consume
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use strand_client::{Admin, Consumer, Offset, Producer, ProducerRecord};

const TOPIC: &str = "example-greetings";
const RECORDS: usize = 10;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let bootstrap = std::env::var("STRAND_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9292".to_owned());

    let admin = Admin::connect(&bootstrap).await.context("connecting to the broker")?;
    match admin.create_topic(TOPIC, 3, 1, BTreeMap::new()).await {
        Ok(_) => println!("created topic {TOPIC}"),
        Err(e) if e.reason() == "TOPIC_ALREADY_EXISTS" => println!("topic {TOPIC} exists"),
        Err(e) => return Err(e).context("creating the topic"),
    }

    // Produce: send all ten, then wait for their acknowledgements.
    let producer = Producer::builder(&bootstrap).build().await?;
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record = ProducerRecord::new(TOPIC, format!("hello #{i}"))
            .key(format!("user-{}", i % 4))
            .header("example", "produce_consume");
        deliveries.push(producer.send(record).await?);
    }
    // Where this run's records start in each partition.
    let mut first_offset: HashMap<u32, u64> = HashMap::new();
    for d in deliveries {
        let meta = d.await?;
        let offset = meta.offset.context("acks=all reports offsets")?;
        println!("produced {}/{} offset {offset}", meta.topic, meta.partition);
        let first = first_offset.entry(meta.partition).or_insert(offset);
        *first = (*first).min(offset);
    }
    producer.close().await?;

    // Consume: read each partition from this run's first offset.
    let mut consumer = Consumer::builder(&bootstrap)
        .max_wait(Duration::from_millis(200))
        .build()
        .await?;
    let partitions: Vec<u32> = first_offset.keys().copied().collect();
    consumer.assign(TOPIC, &partitions).await?;
    for (p, offset) in &first_offset {
        consumer.seek(TOPIC, *p, Offset::At(*offset)).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < RECORDS {
        if Instant::now() > deadline {
            bail!("read only {seen} of {RECORDS} records within 10 s");
        }
        for r in consumer.poll().await? {
            let key = r.key.as_deref().map(String::from_utf8_lossy);
            let value = r.value.as_deref().map(String::from_utf8_lossy);
            println!(
                "consumed {}/{} offset {}: {key:?} = {value:?}",
                r.topic, r.partition, r.offset
            );
            seen += 1;
        }
    }
    for p in partitions {
        let lag = consumer
            .high_watermark(TOPIC, p)
            .zip(consumer.position(TOPIC, p))
            .map(|(hw, pos)| hw.saturating_sub(pos));
        println!("partition {p}: lag {lag:?}");
    }
    Ok(())
}
