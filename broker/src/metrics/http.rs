//! The HTTP endpoint of `--metrics-listen`: Prometheus text on `/metrics`,
//! liveness on `/health/live`, readiness on `/health/ready`.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use crate::node::Node;

/// Serves `/metrics`, `/health/live` and `/health/ready` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    node: Arc<Node>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;

    let registry = Arc::new(registry);
    let metrics = {
        let registry = Arc::clone(&registry);
        move || {
            let registry = Arc::clone(&registry);
            async move {
                let mut body = String::new();
                match prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
                    Ok(()) => (
                        StatusCode::OK,
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        body,
                    ),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [("content-type", "text/plain")],
                        String::new(),
                    ),
                }
            }
        }
    };
    let ready = {
        let node = Arc::clone(&node);
        move || {
            let node = Arc::clone(&node);
            async move {
                match node.readiness() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
                }
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "live\n" }))
        .route("/health/ready", get(ready));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}
