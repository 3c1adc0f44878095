//! The request-rate quota: every client request (not the brokers' own, not
//! health checks) is charged one unit of its principal's request bucket; an
//! answer over the rate waits (see `security::quota`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use crate::node::Node;
use crate::security::quota::QuotaKind;

#[derive(Clone, Debug)]
pub(super) struct RequestQuotaLayer {
    pub(super) node: Arc<Node>,
}

impl<S> Layer<S> for RequestQuotaLayer {
    type Service = RequestQuota<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestQuota {
            inner,
            node: Arc::clone(&self.node),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct RequestQuota<S> {
    inner: S,
    node: Arc<Node>,
}

/// Paths that are never charged: broker-to-broker traffic and health.
fn exempt(path: &str) -> bool {
    path.starts_with("/strand.v1.Peer/") || path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.")
}

impl<S, ReqBody, ResBody: 'static> Service<http::Request<ReqBody>> for RequestQuota<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let delay = if exempt(req.uri().path()) {
            std::time::Duration::ZERO
        } else {
            let who = crate::security::principal_of(req.extensions());
            self.node.quota_delay(&who, QuotaKind::Requests, 1)
        };
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = answer.await;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            res
        })
    }
}
