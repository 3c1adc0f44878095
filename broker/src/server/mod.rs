//! The gRPC server and the broker it serves: explicit limits, a bounded
//! number of connections, background tasks (retention, leader balancing,
//! group upkeep, replica moves), graceful shutdown that flushes every log.
//!
//! [`Broker`] is where the layers meet: it owns the node, admin, the group
//! coordinator and the metrics, and hands each service what it needs. No
//! layer below holds a reference back up.

mod authenticate;
mod connections;
mod health;
mod oversize;
mod request_quota;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strand_proto::v1::{
    admin_server::AdminServer, auth_server::AuthServer, groups_server::GroupsServer, peer_server::PeerServer,
    share_groups_server::ShareGroupsServer, strand_server::StrandServer,
};
use tokio::net::TcpListener;

use crate::admin::Admin;
use crate::blocking::run_blocking;
use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::security::Security;
use crate::service::{AdminService, AuthService, GroupsService, PeerService, ShareGroupsService, StrandService};
use connections::limited_incoming;

/// How long a stopping broker waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// One broker: its node and the layers above it.
#[derive(Clone, Debug)]
pub struct Broker {
    node: Arc<Node>,
    admin: Admin,
    groups: Arc<GroupCoordinator>,
    metrics: Arc<Metrics>,
}

/// How long starting a broker waits for its data directory to be registered
/// before serving anyway (see `Admin::register_data_dir`).
const REGISTER_AT_START: Duration = Duration::from_secs(5);

impl Broker {
    /// Starts the node (see `Node::start`) and builds the layers over it.
    pub async fn start(config: BrokerConfig, advertised_addr: String) -> Result<Self> {
        raise_descriptor_limit();
        let groups_config = config.groups.clone();
        let security = Security::load(&config.security)?;
        security.spawn_reloader();
        let node = Node::start(config, advertised_addr, security).await?;
        let admin = Admin::new(Arc::clone(&node));
        // A new data directory hosts no replica until the cluster registered
        // it. A broker alone is its own controller: register now, so its
        // first answer already comes with its partitions. In a cluster the
        // controller needs this broker serving (its vote), so a background
        // job does it.
        if node.founders().len() == 1 && node.config().join.is_none() {
            let registering = async {
                while admin.register_data_dir().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            let _ = tokio::time::timeout(REGISTER_AT_START, registering).await;
        }
        let groups = Arc::new(GroupCoordinator::new(groups_config, Arc::clone(&node), admin.clone()));
        Ok(Broker {
            node,
            admin,
            groups,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs `job` every `every` until the broker shuts down.
    fn spawn_periodic<F, Fut>(&self, every: Duration, job: F)
    where
        F: Fn(Broker) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let mut stop = self.node.shutdown_signal();
        let broker = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                job(broker.clone()).await;
            }
        });
    }

    fn spawn_background_tasks(&self) {
        let cfg = self.node.config();
        // Until the cluster registered this data directory the node hosts no
        // partition replica; retried until the controller answers.
        self.spawn_periodic(Duration::from_millis(200), |b| async move {
            if let Err(e) = b.admin.register_data_dir().await {
                tracing::debug!(error = %e, "data directory not registered yet; retrying");
            }
        });
        // Replicas that lost their term take no message until their peers
        // gave them a floor (see `admin::term_floor`). Once a second: finding
        // them looks at every hosted partition.
        self.spawn_periodic(Duration::from_secs(1), |b| async move {
            b.admin.raise_term_floors().await;
        });
        self.spawn_periodic(Duration::from_millis(cfg.retention_check_interval_ms), |b| async move {
            apply_retention(&b.node).await;
        });
        self.spawn_periodic(Duration::from_millis(cfg.leader_balance_interval_ms), |b| async move {
            b.node.balance_leaders();
        });
        self.spawn_periodic(Duration::from_millis(250), |b| async move { b.groups.tick() });
        self.spawn_periodic(
            Duration::from_millis(250),
            |b| async move { b.groups.share_upkeep().await },
        );
        self.spawn_periodic(Duration::from_secs(1), |b| async move {
            b.groups.forget_deleted_topics_everywhere().await;
        });
        self.spawn_periodic(Duration::from_millis(300), |b| async move {
            b.admin.drive_reassignments().await;
        });
    }
}

/// Raises this process's soft limit on open files to its hard limit: each
/// partition segment holds one descriptor, so a broker of thousands of
/// partitions needs more than the usual soft limit of 1,024 (as Kafka's and
/// Redpanda's guides ask of operators; here the broker asks for itself, and
/// the hard limit stays the operator's to set).
fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let before = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
            tracing::info!(from = before, to = lim.rlim_max, "raised the open file limit");
        }
    }
}

/// Applies retention to every hosted partition (file deletes run off the
/// async workers).
async fn apply_retention(node: &Arc<Node>) {
    let node = Arc::clone(node);
    let _ = run_blocking("retention", move || {
        let now = strand_storage::now_ms();
        for p in node.all_partitions() {
            match p.apply_retention(now) {
                Ok(r) if r.deleted_segments > 0 => tracing::info!(
                    topic = %p.topic(), partition = p.id(),
                    segments = r.deleted_segments, bytes = r.deleted_bytes, "retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(topic = %p.topic(), partition = p.id(), error = %e, "retention failed"),
            }
        }
        Ok(())
    })
    .await;
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
    let broker = Broker::start(config, advertised).await?;
    serve(listener, metrics, local, broker, shutdown).await
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
    metrics_listener: Option<TcpListener>,
    local: SocketAddr,
    broker: Broker,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let node = Arc::clone(&broker.node);
    let limits = node.config().limits.clone();
    broker.spawn_background_tasks();
    let incoming = limited_incoming(
        listener,
        limits.max_connections,
        Arc::clone(&broker.metrics.open_connections),
        Arc::clone(node.security()),
        node.shutdown_signal(),
    );
    if let Some(l) = metrics_listener {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "serving metrics and health");
        }
        let registry = crate::metrics::collector::registry(&broker.metrics, &node, &broker.groups);
        tokio::spawn(crate::metrics::http::serve(
            l,
            registry,
            Arc::clone(&node),
            node.shutdown_signal(),
        ));
    }
    let max = limits.max_message_bytes;
    let strand = StrandServer::new(StrandService::new(Arc::clone(&node), Arc::clone(&broker.metrics)))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let admin = AdminServer::new(AdminService::new(broker.admin.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let groups = GroupsServer::new(GroupsService::new(
        Arc::clone(&broker.groups),
        Arc::clone(&broker.metrics),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let share = ShareGroupsServer::new(ShareGroupsService::new(
        Arc::clone(&broker.groups),
        Arc::clone(&broker.metrics),
        Duration::from_millis(limits.max_fetch_wait_ms),
    ))
    .max_decoding_message_size(max)
    .max_encoding_message_size(max);
    let auth = AuthServer::new(AuthService::new(Arc::clone(&node)));
    let peer = PeerServer::new(PeerService::new(broker.admin.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let (reflection, reflection_v1alpha) = health::reflection_services(&local.to_string())?;
    let health = health::health_service(&node).await;
    let tls = node.security().tls().is_some();
    tracing::info!(node = %node.id(), addr = %local, tls, data_dir = %node.config().data_dir.display(), "broker serving");
    let stopping = Arc::clone(&node);
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: ending subscriptions and long polls");
        stopping.begin_shutdown();
        let _ = draining_tx.send(());
    };
    let serving = tonic::transport::Server::builder()
        .timeout(node.config().request_timeout())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_millis(limits.keepalive_interval_ms)))
        .http2_keepalive_timeout(Some(Duration::from_millis(limits.keepalive_timeout_ms)))
        .http2_max_pending_accept_reset_streams(Some(64))
        // Wide HTTP/2 windows: a catch-up stream or a big fetch moves tens of
        // megabytes a second, which the 64 KiB default would throttle.
        .initial_stream_window_size(strand_cluster::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(strand_cluster::CONNECTION_WINDOW_BYTES)
        .layer(oversize::OversizeReasonLayer)
        .layer(authenticate::AuthenticateLayer {
            node: Arc::clone(&node),
        })
        .layer(request_quota::RequestQuotaLayer {
            node: Arc::clone(&node),
        })
        .add_service(strand)
        .add_service(admin)
        .add_service(groups)
        .add_service(share)
        .add_service(peer)
        .add_service(auth)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
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
    node.begin_shutdown();
    let flushing = Arc::clone(&node);
    let _ = run_blocking("flush logs", move || {
        flushing.shutdown();
        Ok(())
    })
    .await;
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
        let broker = Broker::start(config, advertised).await?;
        let task = tokio::spawn(serve(listener, metrics, addr, broker, async move {
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
