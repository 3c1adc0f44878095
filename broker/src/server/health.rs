//! The standard `grpc.health.v1.Health` service and gRPC server reflection
//! on the client port, so that generic tools (grpcurl, grpc_health_probe,
//! Kubernetes' gRPC probes, reflection clients) work with no Strand code.
//!
//! What each health service name reports:
//!
//! - `""` (the whole server), `strand.v1.Strand`, `strand.v1.Admin` and
//!   `strand.v1.Groups`: SERVING exactly when the broker can serve clients
//!   (`Node::readiness`: metadata caught up, every hosted partition has a
//!   leader, not shutting down); NOT_SERVING while it starts, recovers or
//!   shuts down. This is the readiness probe.
//! - `strand.v1.Peer`: SERVING from start until shutdown begins. Brokers must
//!   reach a recovering peer, so this is the liveness probe.
//!
//! Statuses change only when they change, so a `Watch` sees transitions,
//! not a stream of repeats.

use std::sync::Arc;
use std::time::Duration;

use strand_proto::v1::{
    admin_server::AdminServer, groups_server::GroupsServer, peer_server::PeerServer, strand_server::StrandServer,
};
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::error::{BrokerError, Result};
use crate::node::Node;
use crate::service::{AdminService, GroupsService, PeerService, StrandService};

/// How often readiness is re-evaluated. It looks at every hosted
/// partition's leader: with 10,000 partitions a check costs milliseconds,
/// which at five checks a second was a third of an idle broker's CPU.
/// Probes (Kubernetes' default period is 10 s) see a change within a second;
/// a shutdown is seen at once.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The services whose status follows readiness (the empty name is the
/// whole server).
const READINESS_SERVICES: [&str; 4] = [
    "",
    <StrandServer<StrandService> as NamedService>::NAME,
    <AdminServer<AdminService> as NamedService>::NAME,
    <GroupsServer<GroupsService> as NamedService>::NAME,
];

/// The service whose status is liveness.
const LIVENESS_SERVICE: &str = <PeerServer<PeerService> as NamedService>::NAME;

/// Builds the health service, NOT_SERVING everywhere until the first check,
/// and starts the task that keeps it current until the broker stops.
pub(super) async fn health_service(
    node: &Arc<Node>,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in READINESS_SERVICES.into_iter().chain([LIVENESS_SERVICE]) {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
    tokio::spawn(track(Arc::clone(node), reporter));
    service
}

async fn track(node: Arc<Node>, reporter: HealthReporter) {
    let mut stop = node.shutdown_signal();
    let mut ready_was = None;
    let mut live_was = None;
    loop {
        let stopping = *stop.borrow();
        let live = !stopping;
        let ready = live && node.readiness().is_ok();
        if live_was != Some(live) {
            reporter.set_service_status(LIVENESS_SERVICE, status(live)).await;
            live_was = Some(live);
        }
        if ready_was != Some(ready) {
            for name in READINESS_SERVICES {
                reporter.set_service_status(name, status(ready)).await;
            }
            tracing::info!(node = %node.id(), ready, "health");
            ready_was = Some(ready);
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
}

fn status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Server reflection (v1 and the v1alpha that older tools ask for) listing
/// every service this port serves: Strand's four and the health service.
pub(super) fn reflection_services(
    addr: &str,
) -> Result<(
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::v1alpha::ServerReflectionServer<impl tonic_reflection::server::v1alpha::ServerReflection>,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strand_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let failed = |e: tonic_reflection::server::Error| BrokerError::Serve {
        addr: addr.to_string(),
        source: Box::new(e),
    };
    Ok((
        builder().build_v1().map_err(failed)?,
        builder().build_v1alpha().map_err(failed)?,
    ))
}
