//! Password tokens on every request: a request with `authorization: Bearer
//! <token>` acts as the token's user if the token verifies (the cluster's
//! key, not expired, the user still exists), and is refused with
//! `AUTHENTICATION_FAILED` otherwise. With `require_authentication`, a
//! request that proved nothing (no token, no client certificate) is refused
//! too. The login itself (`Auth`), health checks, reflection and the
//! brokers' own `Peer` service (which checks its callers itself) pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use strand_security::Principal;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BrokerError;
use crate::node::Node;
use crate::security::{Authenticated, Connection};

#[derive(Clone, Debug)]
pub(super) struct AuthenticateLayer {
    pub(super) node: Arc<Node>,
}

impl<S> Layer<S> for AuthenticateLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            node: Arc::clone(&self.node),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Authenticate<S> {
    inner: S,
    node: Arc<Node>,
}

fn open_path(path: &str) -> bool {
    [
        "/strand.v1.Auth/",
        "/strand.v1.Peer/",
        "/grpc.health.",
        "/grpc.reflection.",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

type Body = tonic::body::Body;

impl<S> Service<http::Request<Body>> for Authenticate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let refuse = |reason: &str| -> Self::Future {
            let status: tonic::Status = BrokerError::AuthenticationFailed { reason: reason.into() }.into();
            let res = status.into_http();
            Box::pin(async move { Ok(res) })
        };
        let bearer = req.headers().get(http::header::AUTHORIZATION).map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned)
        });
        match bearer {
            Some(Some(token)) => match self.node.verify_token(&token) {
                Some(user) => {
                    req.extensions_mut().insert(Authenticated(Principal::user(&user)));
                }
                None => {
                    self.node
                        .security()
                        .audit()
                        .authentication_failed("token", "invalid or expired token");
                    return refuse("the token is invalid or expired: log in again");
                }
            },
            Some(None) => return refuse("the authorization header is not `Bearer <token>`"),
            None => {
                let proved = req
                    .extensions()
                    .get::<Connection>()
                    .is_some_and(|c| c.principal.is_some());
                if !proved && self.node.security().config().require_authentication && !open_path(req.uri().path()) {
                    return refuse("this broker requires a client certificate or a password login");
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}
