//! [`SessionService`] and its [`ResponseFuture`]: the request path, as SCS's `LoadAndSave` —
//! token in → session handle → handler → commit → token out.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::SystemTime,
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{Error, Session, session::Begun, shared::Shared, wire};

/// The service made by [`SessionLayer`](super::SessionLayer).
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SessionService<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        SessionService { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let incoming = wire::read(&self.shared.config, &req);
        // An outer session layer's session stays reachable through `Sessions`.
        let outer = req.extensions().get::<Session>().cloned();
        let session = Session::new(self.shared.clone(), incoming.token, outer);
        req.extensions_mut().insert(session.clone());
        ResponseFuture {
            state: State::Handler {
                future: self.inner.call(req),
                session: Some(session),
                carrier: incoming.carrier,
            },
        }
    }
}

type Committing<B> = Pin<Box<dyn Future<Output = Response<B>> + Send>>;

pin_project! {
    /// Response future of [`SessionService`]: runs the inner service, then commits the session.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Handler { #[pin] future: F, session: Option<Session>, carrier: usize },
        Committing { future: Committing<B> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Handler {
                    future,
                    session,
                    carrier,
                } => {
                    let mut response = ready!(future.poll(cx))?;
                    let session = session.take().expect("polled after completion");
                    let Some((begun, now)) = begin_after(&session, &mut response) else {
                        return Poll::Ready(Ok(response));
                    };
                    let future = Box::pin(finish(session, begun, *carrier, now, response));
                    self.as_mut()
                        .project()
                        .state
                        .set(State::Committing { future });
                }
                StateProj::Committing { future } => return future.as_mut().poll(cx).map(Ok),
            }
        }
    }
}

/// Marks the handler's response as varying on the token, then takes the session's plan: `None`
/// when it has nothing to store or send, so that the response goes as it is.
fn begin_after<B>(session: &Session, response: &mut Response<B>) -> Option<(Begun, SystemTime)> {
    wire::vary(&session.shared().config, response.headers_mut());
    if !session.needs_commit() {
        return None;
    }
    let now = SystemTime::now();
    match session.begin(now, true) {
        Begun::Nothing(None) => None,
        begun => Some((begun, now)),
    }
}

/// Commits the session and puts its token on the response, on the carrier the request used,
/// or replaces the response with the error response when the session or the store failed.
async fn finish<B: Default>(
    session: Session,
    begun: Begun,
    carrier: usize,
    now: SystemTime,
    mut response: Response<B>,
) -> Response<B> {
    let shared = session.shared();
    let sent = match session.settle(begun, now).await {
        Ok(Some(out)) => wire::write(&shared.config, response.headers_mut(), carrier, out, now),
        other => other.map(drop),
    };
    match sent {
        Ok(()) => response,
        Err(e) => error_response(shared, &e),
    }
}

fn error_response<B: Default>(shared: &Shared, e: &Error) -> Response<B> {
    tracing::error!(error = %e, "session error; sending the error response");
    let (parts, ()) = (shared.config.error_handler)(e).into_parts();
    let mut response = Response::from_parts(parts, B::default());
    wire::vary(&shared.config, response.headers_mut());
    response
}
