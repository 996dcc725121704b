//! The session middleware, shaped as tower-http shapes one:
//!
//! - [`SessionLayer`] (`builder.rs`): the settings, and the Tower `Layer`;
//! - [`SessionService`] and [`ResponseFuture`] (`service.rs`): the request path, SCS's
//!   `LoadAndSave` — token in → session handle → handler → commit → token out;
//!
//! The token on the wire (the carriers, signing) is in `crate::wire`; the commit itself, which
//! a handler can also run by hand, in `crate::session`.

mod builder;
mod service;

pub use self::{
    builder::SessionLayer,
    service::{ResponseFuture, SessionService},
};
