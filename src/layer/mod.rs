//! The session middleware, shaped as tower-http shapes one:
//!
//! - [`SessionLayer`] (`builder.rs`): the settings, and the Tower `Layer`;
//! - [`SessionService`] and [`ResponseFuture`] (`service.rs`): the request path, SCS's
//!   `LoadAndSave` — token in → session handle → handler → commit → token out;
//! - `commit.rs`: running a session's plan against the store after the handler.
//!
//! The token on the wire (reading the cookie, rendering `Set-Cookie`) is in `crate::wire`.

mod builder;
mod commit;
mod service;

pub use self::{
    builder::SessionLayer,
    service::{ResponseFuture, SessionService},
};
