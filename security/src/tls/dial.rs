//! The client side: how tonic channels reach a broker, in plaintext or
//! over TLS with the context's current client configuration (so a
//! rotated client certificate is used by the next connection).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::TlsContext;

/// How channels connect: plaintext, or TLS with a context.
#[derive(Clone, Debug, Default)]
pub struct Dialer {
    tls: Option<Arc<TlsContext>>,
}

impl Dialer {
    /// Plaintext connections.
    pub fn plaintext() -> Self {
        Dialer { tls: None }
    }

    /// TLS connections verified against `ctx`'s CA, presenting its
    /// certificate if it has one.
    pub fn tls(ctx: Arc<TlsContext>) -> Self {
        Dialer { tls: Some(ctx) }
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS context, if any.
    pub fn context(&self) -> Option<&Arc<TlsContext>> {
        self.tls.as_ref()
    }

    /// Connects `endpoint` (an `http://host:port` address; TLS, if any, is
    /// this dialer's).
    ///
    /// # Errors
    /// Whatever connecting or the handshake fails with.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => endpoint.connect().await,
            Some(ctx) => endpoint.connect_with_connector(TlsConnector(Arc::clone(ctx))).await,
        }
    }

    /// A channel that connects on first use.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match &self.tls {
            None => endpoint.connect_lazy(),
            Some(ctx) => endpoint.connect_with_connector_lazy(TlsConnector(Arc::clone(ctx))),
        }
    }
}

/// A tower connector: TCP, then the TLS handshake naming the URI's host.
#[derive(Clone)]
struct TlsConnector(Arc<TlsContext>);

type Connecting = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // A new connection is the moment a rotated client certificate
        // matters; three stats are cheap next to a handshake.
        if let Err(e) = self.0.reload_if_changed() {
            tracing::warn!(error = %e, "TLS files changed but cannot be loaded; keeping the previous ones");
        }
        let config = self.0.client_config();
        Box::pin(async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what} in {uri}"));
            let host = uri.host().ok_or_else(|| invalid("no host"))?.to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("no port"))?;
            // `[::1]` in a URI is `::1` to the resolver and the certificate.
            let bare = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let name = ServerName::try_from(bare.clone()).map_err(|_| invalid("a host that is no DNS name or IP"))?;
            let tcp = TcpStream::connect((bare.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
