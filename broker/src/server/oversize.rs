//! A request larger than `limits.max_message_bytes` is refused by tonic's
//! codec before any Strand code runs, as a bare `OUT_OF_RANGE` ("decoded
//! message length too large"). This layer gives that answer the same
//! `strand-reason` metadata as every other refusal: `RECORD_TOO_LARGE`, so
//! a client can tell "too big" from "offset out of range" by reason alone.
//!
//! Strand's own `OUT_OF_RANGE` answers always carry a reason, so only the
//! codec's are touched.

use std::task::{Context, Poll};

use futures::TryFutureExt;
use futures::future::MapOk;
use strand_proto::v1::ErrorCode;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::REASON_KEY;

/// Wraps every service of the server in [`OversizeReason`].
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct OversizeReasonLayer;

impl<S> Layer<S> for OversizeReasonLayer {
    type Service = OversizeReason<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OversizeReason { inner }
    }
}

/// See the module docs.
#[derive(Clone, Debug)]
pub(super) struct OversizeReason<S> {
    inner: S,
}

type Mark<B> = fn(http::Response<B>) -> http::Response<B>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for OversizeReason<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = MapOk<S::Future, Mark<ResBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        self.inner.call(req).map_ok(mark_oversize as Mark<ResBody>)
    }
}

/// gRPC's OUT_OF_RANGE status code.
const OUT_OF_RANGE: &str = "11";

fn mark_oversize<B>(mut res: http::Response<B>) -> http::Response<B> {
    let headers = res.headers_mut();
    let codec_refusal = headers.get("grpc-status").is_some_and(|v| v == OUT_OF_RANGE)
        && !headers.contains_key(REASON_KEY)
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("length%20too%20large") || m.contains("length too large"));
    if codec_refusal {
        headers.insert(
            REASON_KEY,
            http::HeaderValue::from_static(ErrorCode::RecordTooLarge.as_str_name()),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: &str, message: &str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_str(status).expect("ascii"));
        r.headers_mut()
            .insert("grpc-message", http::HeaderValue::from_str(message).expect("ascii"));
        r
    }

    #[test]
    fn the_codecs_size_refusal_gets_record_too_large() {
        let r = mark_oversize(response("11", "Error,%20decoded%20message%20length%20too%20large"));
        assert_eq!(
            r.headers().get(REASON_KEY).and_then(|v| v.to_str().ok()),
            Some("RECORD_TOO_LARGE")
        );
    }

    #[test]
    fn other_answers_are_left_alone() {
        let offset = mark_oversize(response("11", "offset%2010%20is%20out%20of%20range"));
        assert!(offset.headers().get(REASON_KEY).is_none(), "not a size refusal");
        let mut ours = response("11", "decoded%20message%20length%20too%20large");
        ours.headers_mut()
            .insert(REASON_KEY, http::HeaderValue::from_static("OFFSET_OUT_OF_RANGE"));
        let ours = mark_oversize(ours);
        assert_eq!(
            ours.headers().get(REASON_KEY).and_then(|v| v.to_str().ok()),
            Some("OFFSET_OUT_OF_RANGE"),
            "a reason already there stays"
        );
        let ok = mark_oversize(response("0", ""));
        assert!(ok.headers().get(REASON_KEY).is_none());
    }
}
