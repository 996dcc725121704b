//! Several session layers in one app: different cookie names and key prefixes, side by side.

use axum::{Router, routing::get};
use http::{Request, header};
use tower_scs::{MemoryStore, Session, SessionLayer, Sessions};

use crate::harness::{Backend, Kind, send};

crate::both_stores!(two_layers_keep_separate_sessions);

async fn put_user(session: Session) {
    session.insert("who", "user");
}

async fn put_admin(sessions: Sessions) {
    sessions
        .get("admin")
        .expect("admin layer")
        .insert("who", "admin");
}

async fn read_both(sessions: Sessions, session: Session) -> String {
    let admin = sessions.get("admin").unwrap();
    let user = sessions.get("session").unwrap();
    let a: Option<String> = admin.get("who").await.unwrap();
    let u: Option<String> = user.get("who").await.unwrap();
    let plain: Option<String> = session.get("who").await.unwrap();
    format!("{a:?} {u:?} {plain:?}")
}

async fn destroy_admin(sessions: Sessions) {
    sessions.get("admin").unwrap().destroy();
}

async fn two_layers_keep_separate_sessions(backend: Backend) {
    let (user_layer, admin_layer) = match &backend.kind {
        Kind::Memory(_) => (
            SessionLayer::new(MemoryStore::new()),
            SessionLayer::new(MemoryStore::new()),
        ),
        Kind::Redis(server) => {
            let store = server.store().await;
            (
                SessionLayer::new(store.clone()),
                SessionLayer::new(store.with_prefix("admin:session:")),
            )
        }
    };
    let app = Router::new()
        .route("/user", get(put_user))
        .route("/admin", get(put_admin))
        .route("/read", get(read_both))
        .route("/destroy_admin", get(destroy_admin))
        .layer(user_layer) // inner: the plain `Session`
        .layer(admin_layer.cookie_name("admin"));

    let call = |path: &str, cookies: &str| {
        let mut req = Request::get(path);
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies);
        }
        send(&app, req.body(axum::body::Body::empty()).unwrap())
    };
    let user = call("/user", "").await.set_cookie().unwrap();
    assert_eq!(user.name(), "session");
    let admin = call("/admin", "").await.set_cookie().unwrap();
    assert_eq!(admin.name(), "admin");
    assert_ne!(user.value(), admin.value());
    let both = format!("session={}; admin={}", user.value(), admin.value());
    let body = call("/read", &both).await.body;
    assert_eq!(body, r#"Some("admin") Some("user") Some("user")"#);

    if let Some(inspector) = backend.inspector() {
        let mut keys = inspector.keys().await;
        keys.sort();
        let expected = vec![
            format!("admin:session:{}", admin.value()),
            format!("scs:session:{}", user.value()),
        ];
        assert_eq!(keys, expected);
    }

    // Destroying one leaves the other.
    let res = call("/destroy_admin", &both).await;
    let expired = res.set_cookie().unwrap();
    assert_eq!((expired.name(), expired.value()), ("admin", ""));
    assert_eq!(
        res.set_cookie_headers().len(),
        1,
        "the user cookie is untouched"
    );
    let body = call("/read", &both).await.body;
    assert_eq!(body, r#"None Some("user") Some("user")"#);
}
