//! The server side of a TLS connection: the handshake, and the principal
//! the client's certificate names (read once per connection).

use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::principal::Principal;

/// Why a connection was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum TlsAcceptError {
    /// The handshake failed: no or a bad client certificate, a client
    /// speaking plaintext, a protocol error.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// The client did not finish the handshake in time.
    #[error("TLS handshake not finished within {0:?}")]
    Timeout(Duration),
    /// The client's certificate names no principal (no node URI, no
    /// common name).
    #[error("the client certificate names no principal")]
    NoPrincipal,
}

/// Runs the server handshake on `tcp` within `limit`. Returns the stream
/// and the principal of the client's certificate (`None` when the client
/// sent none, which the configuration allows only when client
/// authentication is optional).
///
/// # Errors
/// [`TlsAcceptError`].
pub async fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    limit: Duration,
) -> Result<(TlsStream<TcpStream>, Option<Principal>), TlsAcceptError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(TlsAcceptError::Handshake(e)),
        Err(_) => return Err(TlsAcceptError::Timeout(limit)),
    };
    let principal = match stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(leaf) => Some(Principal::from_certificate(leaf).ok_or(TlsAcceptError::NoPrincipal)?),
        None => None,
    };
    Ok((stream, principal))
}
