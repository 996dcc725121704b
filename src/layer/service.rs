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

use super::commit::commit_plan;
use crate::{Error, Session, session::Plan, shared::Shared, wire};

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
        let token = wire::read(&self.shared.config, &req);
        // An outer session layer's session stays reachable through `Sessions`.
        let outer = req.extensions().get::<Session>().cloned();
        let session = Session::new(self.shared.clone(), token, outer);
        req.extensions_mut().insert(session.clone());
        ResponseFuture {
            state: State::Handler {
                future: self.inner.call(req),
                session: Some(session),
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
        Handler { #[pin] future: F, session: Option<Session> },
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
                StateProj::Handler { future, session } => {
                    let mut response = ready!(future.poll(cx))?;
                    let session = session.take().expect("polled after completion");
                    let Some((plan, now)) = plan_after(&session, &mut response) else {
                        return Poll::Ready(Ok(response));
                    };
                    let future = Box::pin(finish(session, plan, now, response));
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

/// Marks the handler's response as varying on the token, then draws the session's plan: `None`
/// when it has nothing to store, so that the response goes as it is.
fn plan_after<B>(session: &Session, response: &mut Response<B>) -> Option<(Plan, SystemTime)> {
    wire::vary(&session.shared().config, response.headers_mut());
    if !session.needs_commit() {
        return None;
    }
    let now = SystemTime::now();
    match session.plan(now) {
        Plan::Nothing => None,
        plan => Some((plan, now)),
    }
}

/// Commits the session and puts its token on the response, or replaces the response with the
/// error response when the session or the store failed.
async fn finish<B: Default>(
    session: Session,
    plan: Plan,
    now: SystemTime,
    mut response: Response<B>,
) -> Response<B> {
    let shared = session.shared();
    let sent = match commit_plan(shared, plan).await {
        Ok(Some(out)) => wire::write(&shared.config, response.headers_mut(), out, now),
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
