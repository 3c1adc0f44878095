//! Client connections: a bounded number, counted in the metrics; a
//! connection over the limit is closed at accept. With TLS, the handshake
//! runs off the accept loop (a slow client cannot stall others) and names
//! the connection's principal once.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::security::{Connection, Security};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// The bytes of a connection: plaintext or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Forwards an I/O call to whichever stream the connection has.
macro_rules! on_stream {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.stream {
            Stream::Plain($s) => $e,
            Stream::Tls($s) => $e,
        }
    };
}

/// An accepted connection that holds one of the `max_connections` permits
/// until it closes.
pub struct LimitedConn {
    stream: Stream,
    info: Connection,
    _permit: OwnedSemaphorePermit,
    open: Arc<AtomicI64>,
}

impl Drop for LimitedConn {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for LimitedConn {
    type ConnectInfo = Connection;
    fn connect_info(&self) -> Connection {
        self.info.clone()
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        on_stream!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_stream!(self, s => Pin::new(s).poll_shutdown(cx))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        on_stream!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections while permits last; a connection over the limit is
/// closed at once (the client sees a reset and may try another broker).
pub(super) fn limited_incoming(
    listener: TcpListener,
    max_connections: usize,
    open: Arc<AtomicI64>,
    security: Arc<Security>,
    mut stop: watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<LimitedConn>> {
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
                    open.fetch_add(1, Ordering::Relaxed);
                    let server_config = security.tls().and_then(|t| t.server_config());
                    let Some(server_config) = server_config else {
                        let conn = LimitedConn {
                            stream: Stream::Plain(stream),
                            info: Connection {
                                remote: Some(peer),
                                principal: None,
                            },
                            _permit: permit,
                            open: Arc::clone(&open),
                        };
                        if tx.send(Ok(conn)).await.is_err() {
                            return;
                        }
                        continue;
                    };
                    let (tx, open, security) = (tx.clone(), Arc::clone(&open), Arc::clone(&security));
                    tokio::spawn(async move {
                        match strand_security::tls::accept(stream, server_config, HANDSHAKE_LIMIT).await {
                            Ok((tls, principal)) => {
                                let conn = LimitedConn {
                                    stream: Stream::Tls(Box::new(tls)),
                                    info: Connection {
                                        remote: Some(peer),
                                        principal,
                                    },
                                    _permit: permit,
                                    open,
                                };
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Err(e) => {
                                open.fetch_sub(1, Ordering::Relaxed);
                                security.audit().handshake_failed();
                                tracing::info!(%peer, error = %e, "TLS connection refused");
                            }
                        }
                    });
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
