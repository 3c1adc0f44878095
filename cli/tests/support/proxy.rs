//! A seeded user-space TCP fault proxy, for flaky links where the kernel's
//! `netem` is not available. Every connection to a broker goes through its
//! proxy; when flaky, each chunk forwarded is delayed 50–200 ms (so chunks of
//! different connections overtake each other) and 1 % of chunks end the
//! connection (a loss burst TCP cannot hide). Duplication and reordering of
//! single segments happen below TCP and are invisible above it, so a proxy
//! cannot add them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A proxy in front of one broker.
pub struct FaultProxy {
    /// Where clients and peers connect.
    pub addr: String,
    flaky: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small xorshift shared by a proxy's connections (seeded, so a run can
/// be repeated).
struct Dice(AtomicU64);

impl Dice {
    fn next(&self) -> u64 {
        let mut x = self.0.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.store(x, Ordering::Relaxed);
        x
    }
}

impl FaultProxy {
    /// Listens on `listener` and forwards to `upstream`.
    pub fn start(listener: std::net::TcpListener, upstream: String, seed: u64) -> Self {
        let addr = listener.local_addr().expect("proxy address").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let flaky = Arc::new(AtomicBool::new(false));
        let dice = Arc::new(Dice(AtomicU64::new(seed | 1)));
        let (f, d) = (Arc::clone(&flaky), Arc::clone(&dice));
        let task = tokio::spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            while let Ok((inbound, _)) = listener.accept().await {
                let (upstream, flaky, dice) = (upstream.clone(), Arc::clone(&f), Arc::clone(&d));
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        _ = pump(ri, wo, &flaky, &dice) => {}
                        _ = pump(ro, wi, &flaky, &dice) => {}
                    }
                });
            }
        });
        FaultProxy { addr, flaky, task }
    }

    /// Turns the faults on or off (new and open connections alike).
    pub fn set_flaky(&self, on: bool) {
        self.flaky.store(on, Ordering::Relaxed);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    flaky: &AtomicBool,
    dice: &Dice,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if flaky.load(Ordering::Relaxed) {
            let roll = dice.next();
            if roll.is_multiple_of(100) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50 + (roll >> 8) % 151)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
