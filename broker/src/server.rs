//! The gRPC server: explicit limits, a bounded number of connections,
//! background retention, graceful shutdown that flushes every log.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use strand_proto::v1::{
    admin_server::AdminServer, groups_server::GroupsServer, peer_server::PeerServer, strand_server::StrandServer,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::service::peer::PeerService;
use crate::service::{AdminService, GroupsService, StrandService};
use crate::state::BrokerState;

/// How long a stopping broker waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// An accepted connection that holds one of the `max_connections` permits
/// until it closes.
pub struct LimitedConn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    state: Arc<BrokerState>,
}

impl Drop for LimitedConn {
    fn drop(&mut self) {
        self.state
            .metrics
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Connected for LimitedConn {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections while permits last; a connection over the limit is
/// closed at once (the client sees a reset and may try another broker).
fn limited_incoming(
    listener: TcpListener,
    max_connections: usize,
    state: Arc<BrokerState>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<LimitedConn>> {
    let mut stop = state.shutdown_signal();
    let permits = Arc::new(Semaphore::new(max_connections));
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        tracing::warn!(%peer, max_connections, "connection limit reached; closing new connection");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    state
                        .metrics
                        .open_connections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let conn = LimitedConn {
                        stream,
                        _permit: permit,
                        state: Arc::clone(&state),
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Runs `job` every `every` until the broker shuts down.
fn spawn_periodic<F, Fut>(state: &Arc<BrokerState>, every: Duration, job: F)
where
    F: Fn(Arc<BrokerState>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let mut stop = state.shutdown_signal();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            job(Arc::clone(&state)).await;
        }
    });
}

/// Hands leadership back to each partition's preferred replica once it is
/// caught up (the leader of a partition checks; followers do nothing).
async fn balance_leaders(state: Arc<BrokerState>) {
    for p in state.all_partitions() {
        let status = p.status();
        let Some(&preferred) = p.replicas().first() else {
            continue;
        };
        if !status.is_leader || preferred == state.node_id {
            continue;
        }
        // The replication loop checks the preferred replica's live progress.
        let _ = state.node.transfer_leader(p.group(), preferred);
    }
}

/// Applies retention to every hosted partition (file deletes run off the
/// async workers).
async fn apply_retention(state: Arc<BrokerState>) {
    let run = tokio::task::spawn_blocking(move || {
        let now = strand_storage::now_ms();
        for p in state.all_partitions() {
            match p.apply_retention(now) {
                Ok(r) if r.deleted_segments > 0 => tracing::info!(
                    topic = %p.topic(), partition = p.id(),
                    segments = r.deleted_segments, bytes = r.deleted_bytes, "retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(topic = %p.topic(), partition = p.id(), error = %e, "retention failed"),
            }
        }
    });
    let _ = run.await;
}

/// Serves the broker on `listener` until `shutdown` completes, then stops
/// accepting, ends long-lived requests and flushes every log.
pub async fn run(listener: TcpListener, config: BrokerConfig, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let local = listener.local_addr().map_err(|e| BrokerError::Serve {
        addr: config.listen.clone(),
        source: Box::new(e),
    })?;
    let metrics = bind_metrics(&config).await?;
    let advertised = config.advertised_addr.clone().unwrap_or_else(|| local.to_string());
    let state = BrokerState::start(config, advertised).await?;
    serve(listener, metrics, local, state, shutdown).await
}

async fn bind_metrics(config: &BrokerConfig) -> Result<Option<TcpListener>> {
    match &config.metrics_listen {
        Some(addr) => TcpListener::bind(addr).await.map(Some).map_err(|e| BrokerError::Serve {
            addr: addr.clone(),
            source: Box::new(e),
        }),
        None => Ok(None),
    }
}

async fn serve(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    local: SocketAddr,
    state: Arc<BrokerState>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let limits = state.config.limits.clone();
    let cfg = &state.config;
    spawn_periodic(
        &state,
        Duration::from_millis(cfg.retention_check_interval_ms),
        apply_retention,
    );
    spawn_periodic(
        &state,
        Duration::from_millis(cfg.leader_balance_interval_ms),
        balance_leaders,
    );
    spawn_periodic(&state, Duration::from_millis(250), |s| async move { s.groups.tick(&s) });
    spawn_periodic(&state, Duration::from_millis(300), |s| async move {
        crate::reassign::drive(&s).await;
    });
    let incoming = limited_incoming(listener, limits.max_connections, Arc::clone(&state));
    if let Some(l) = metrics {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving metrics and health");
        }
        tokio::spawn(crate::metrics::serve(l, Arc::clone(&state), state.shutdown_signal()));
    }
    let max = limits.max_message_bytes;
    let strand = StrandServer::new(StrandService::new(Arc::clone(&state)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = AdminServer::new(AdminService::new(Arc::clone(&state)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let groups = GroupsServer::new(GroupsService::new(Arc::clone(&state)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let peer = PeerServer::new(PeerService::new(Arc::clone(&state)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    tracing::info!(node = state.config.node_id, addr = %local, data_dir = %state.config.data_dir.display(), "broker serving");
    let st = Arc::clone(&state);
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: ending subscriptions and long polls");
        st.begin_shutdown();
        let _ = draining_tx.send(());
    };
    let serving = tonic::transport::Server::builder()
        .timeout(state.config.request_timeout())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_millis(limits.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(limits.keepalive_timeout_ms)))
        .http2_max_pending_accept_reset_streams(Some(64))
        .add_service(strand)
        .add_service(admin)
        .add_service(groups)
        .add_service(peer)
        .serve_with_incoming_shutdown(incoming, signal);
    // Graceful, but bounded: clients that keep connections open cannot hold
    // the broker (and the flush of its logs) hostage.
    let grace = async {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        r = serving => r,
        () = grace => {
            tracing::warn!(grace_ms = SHUTDOWN_GRACE.as_millis() as u64, "connections still open after the grace period; closing them");
            Ok(())
        }
    };
    state.begin_shutdown();
    let st = Arc::clone(&state);
    let _ = tokio::task::spawn_blocking(move || st.shutdown()).await;
    tracing::info!("broker stopped; logs flushed");
    served.map_err(|e| BrokerError::Serve {
        addr: local.to_string(),
        source: Box::new(e),
    })
}

/// A broker running on a background task (for tests and embedding).
pub struct RunningBroker {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bound metrics address, if metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RunningBroker {
    /// Binds `config.listen` (use port 0 for an ephemeral port) and serves in
    /// the background.
    pub async fn start(config: BrokerConfig) -> Result<Self> {
        let listener = TcpListener::bind(&config.listen)
            .await
            .map_err(|e| BrokerError::Serve {
                addr: config.listen.clone(),
                source: Box::new(e),
            })?;
        let addr = listener.local_addr().map_err(|e| BrokerError::Serve {
            addr: config.listen.clone(),
            source: Box::new(e),
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let metrics = bind_metrics(&config).await?;
        let metrics_addr = metrics.as_ref().and_then(|l| l.local_addr().ok());
        let advertised = config.advertised_addr.clone().unwrap_or_else(|| addr.to_string());
        let state = BrokerState::start(config, advertised).await?;
        let task = tokio::spawn(serve(listener, metrics, addr, state, async move {
            let _ = rx.await;
        }));
        Ok(RunningBroker {
            addr,
            metrics_addr,
            stop: Some(tx),
            task,
        })
    }

    /// Stops gracefully (flushing every log) and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(BrokerError::Serve {
                addr: self.addr.to_string(),
                source: Box::new(e),
            }),
        }
    }
}
