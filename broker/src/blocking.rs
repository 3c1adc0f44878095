//! Blocking work (file I/O, fsync, directory changes) run off the async
//! runtime's workers, so a slow disk never stalls request handling.

use crate::error::{BrokerError, Result};

/// Runs `f` on tokio's blocking pool; `what` names it if it panics.
pub async fn run_blocking<T, F>(what: &'static str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| BrokerError::TaskFailed { what, source })?
}
