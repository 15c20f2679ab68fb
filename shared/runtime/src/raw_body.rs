//! Hands the handler the invocation body as the bytes Lambda sent.
//!
//! `lambda_runtime` parses every body into the handler's event type with a path-tracking
//! serde_json deserializer that allocates a string per object key. For a 6 MB batch that is
//! a whole extra pass over the event (even into a `RawValue`) before the source parses it
//! itself. This layer, outermost in the runtime's stack, takes the body out of the invocation,
//! keeps it by request id, and lets the runtime parse a JSON `null` instead; the handler takes
//! the body back by its request id and the source parses it once, borrowing from it.

use bytes::Bytes;
use lambda_runtime::tower::{Layer, Service};
use lambda_runtime::LambdaInvocation;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// What the runtime parses in place of the body: `null`, read as `()`.
const PLACEHOLDER: &[u8] = b"null";

/// Lambda's longest function timeout (15 minutes). A body kept longer than this belongs to an
/// invocation that is certainly over (its handler panicked before taking it), so it is freed.
pub const MAX_INVOCATION: Duration = Duration::from_secs(15 * 60);

/// Invocation bodies by request id, between the layer and the handler. Keyed rather than a
/// single slot so concurrent invocations (Lambda Managed Instances) never see each other's.
#[derive(Clone, Default)]
pub struct RawBodies(Arc<Mutex<HashMap<String, (Instant, Bytes)>>>);

impl RawBodies {
    fn put(&self, request_id: String, body: Bytes) {
        self.put_at(request_id, body, Instant::now());
    }

    fn put_at(&self, request_id: String, body: Bytes, now: Instant) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        kept.retain(|_, (since, _)| now.saturating_duration_since(*since) <= MAX_INVOCATION);
        kept.insert(request_id, (now, body));
    }

    /// The body of `request_id`, removed; `None` if the layer never saw it.
    pub fn take(&self, request_id: &str) -> Option<Bytes> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(request_id)
            .map(|(_, body)| body)
    }
}

impl<S> Layer<S> for RawBodies {
    type Service = TakeBody<S>;
    fn layer(&self, inner: S) -> TakeBody<S> {
        TakeBody {
            inner,
            bodies: self.clone(),
        }
    }
}

/// The service [`RawBodies`] wraps around the runtime's stack.
pub struct TakeBody<S> {
    inner: S,
    bodies: RawBodies,
}

impl<S> Service<LambdaInvocation> for TakeBody<S>
where
    S: Service<LambdaInvocation>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        let body = std::mem::replace(&mut invocation.body, Bytes::from_static(PLACEHOLDER));
        self.bodies.put(invocation.context.request_id.clone(), body);
        self.inner.call(invocation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{ready, Ready};

    /// Records the body the inner service was given.
    #[derive(Clone, Default)]
    struct Inner(Arc<Mutex<Vec<Bytes>>>);

    impl Service<LambdaInvocation> for Inner {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = Ready<Result<(), Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, invocation: LambdaInvocation) -> Self::Future {
            self.0.lock().unwrap().push(invocation.body);
            ready(Ok(()))
        }
    }

    fn invocation(request_id: &str, body: &'static [u8]) -> LambdaInvocation {
        let mut context = lambda_runtime::Context::default();
        context.request_id = request_id.into();
        LambdaInvocation {
            parts: http::Response::new(()).into_parts().0,
            body: Bytes::from_static(body),
            context,
        }
    }

    #[test]
    fn the_runtime_parses_a_placeholder_and_the_handler_gets_the_body_by_request_id() {
        // Given the layer around a service that records what reaches it
        let bodies = RawBodies::default();
        let inner = Inner::default();
        let mut service = bodies.layer(inner.clone());
        // When two invocations pass through
        for (id, body) in [
            ("r1", &br#"{"Records":[1]}"#[..]),
            ("r2", br#"{"Records":[2]}"#),
        ] {
            service.call(invocation(id, body)).into_inner().unwrap();
        }
        // Then the runtime sees only `null`, which parses as the handler's `()`
        let seen = inner.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [Bytes::from_static(b"null"), Bytes::from_static(b"null")]
        );
        let _: () = serde_json::from_slice(&seen[0]).unwrap();
        // and each body is taken back once, by its own request id
        assert_eq!(bodies.take("r2").unwrap(), &br#"{"Records":[2]}"#[..]);
        assert_eq!(bodies.take("r1").unwrap(), &br#"{"Records":[1]}"#[..]);
        assert!(bodies.take("r1").is_none());
    }

    #[test]
    fn a_body_never_taken_is_freed_once_its_invocation_is_certainly_over() {
        // Given a body whose handler never took it (it panicked first)
        let bodies = RawBodies::default();
        let start = Instant::now();
        bodies.put_at("lost".into(), Bytes::from_static(b"{}"), start);
        // When another invocation arrives within the longest timeout, it is kept
        bodies.put_at(
            "next".into(),
            Bytes::from_static(b"{}"),
            start + MAX_INVOCATION,
        );
        assert_eq!(bodies.0.lock().unwrap().len(), 2);
        // Then one arriving after it is freed
        let later = start + MAX_INVOCATION + Duration::from_secs(1);
        bodies.put_at("last".into(), Bytes::from_static(b"{}"), later);
        assert!(bodies.take("lost").is_none());
        assert!(bodies.take("next").is_some() && bodies.take("last").is_some());
    }
}
