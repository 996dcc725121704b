//! `SessionLoader` on both stores (`both_stores!`): sessions made, loaded and committed
//! outside any request, seen by requests and the other way round; forged, tampered and unsigned
//! tokens refused with no store call (MONITOR on the test's own Redis); a rotated loader
//! re-signs an old-key token at commit.

use crate::harness::{
    Backend, Client, NONE, app, assert_calls, assert_valid_token, made_up_token, monitor,
};
use tower_scs::SigningKeys;

crate::both_stores!(
    loader_creates_loads_and_commits,
    loader_refuses_forged_tokens_without_a_store_call,
);

const KEY: &[u8; 32] = b"loader: a key of thirty-two b's!";
const NEXT_KEY: &[u8; 32] = b"loader: the key replacing it!!!!";

async fn loader_creates_loads_and_commits(backend: Backend) {
    let layer = backend.layer().await;
    let loader = layer.loader();
    let app = app(layer);
    // Create: no token until the first commit; then a session any request can use.
    let created = loader.create();
    assert_eq!(created.token().await.unwrap(), None);
    created.insert("job", "queued");
    let token = created.commit().await.unwrap().expect("stored");
    assert_valid_token(&token);
    assert_eq!(
        created.token().await.unwrap().as_deref(),
        Some(token.as_str())
    );
    let mut client = Client::with_token(&app, &token);
    assert_eq!(client.get("/get?key=job").await.body, "queued");

    // Load what a request wrote; a commit stores the loader's change, under the same token.
    client.get("/put?key=a&value=1").await;
    let loaded = loader.load(&token).await.unwrap().expect("live");
    assert_eq!(
        loaded.get::<String>("a").await.unwrap().as_deref(),
        Some("1")
    );
    loaded.insert("b", "2");
    assert_eq!(loaded.commit().await.unwrap(), Some(token.clone()));
    assert_eq!(client.get("/get?key=b").await.body, "2");
    // A change without a commit is not stored.
    loaded.insert("c", "3");
    drop(loaded);
    assert_eq!(client.get("/get?key=c").await.body, NONE);
    assert!(
        loader
            .load(&made_up_token("unknown"))
            .await
            .unwrap()
            .is_none()
    );

    // Renew: the commit returns the new token, the old one is dead.
    let loaded = loader.load(&token).await.unwrap().expect("live");
    loaded.renew_token().await.unwrap();
    let renewed = loaded.commit().await.unwrap().expect("renewed");
    assert_ne!(renewed, token);
    assert_eq!(client.get("/get?key=a").await.body, NONE);
    assert!(loader.load(&token).await.unwrap().is_none());
    // Destroy: the commit returns no token, and the session is gone.
    let loaded = loader.load(&renewed).await.unwrap().expect("live");
    assert_eq!(
        loaded.get::<String>("a").await.unwrap().as_deref(),
        Some("1")
    );
    loaded.destroy();
    assert_eq!(loaded.commit().await.unwrap(), None);
    assert!(loader.load(&renewed).await.unwrap().is_none());
    let res = Client::with_token(&app, &renewed).get("/get?key=a").await;
    assert_eq!(res.body, NONE);
}

/// Values that are no signed token of `wire`'s session under `[KEY]`.
fn forgeries(wire: &str) -> Vec<String> {
    let (token, tag) = (&wire[..43], &wire[44..]);
    let mut tampered = tag.as_bytes().to_vec();
    tampered[7] = if tampered[7] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    vec![
        format!("{token}.{tampered}"),
        format!("{token}.{}", "A".repeat(43)),
        format!("{}.{tag}", made_up_token("another")),
        token.to_owned(),
        wire[..86].to_owned(),
        format!("{wire}A"),
        String::new(),
        "not a token".to_owned(),
        "scs:session:*".to_owned(),
    ]
}

async fn loader_refuses_forged_tokens_without_a_store_call(backend: Backend) {
    let signing = |keys: &[&[u8; 32]]| SigningKeys::new(keys.iter().copied()).unwrap();
    let loader = (backend.layer().await)
        .signing_keys(signing(&[KEY]))
        .loader();
    let rotated = (backend.layer().await)
        .signing_keys(signing(&[NEXT_KEY, KEY]))
        .loader();
    let created = loader.create();
    created.insert("a", "1");
    let wire = created.commit().await.unwrap().expect("stored");
    let gone = loader.create();
    gone.insert("a", "gone");
    let dead = gone.commit().await.unwrap().expect("stored");
    gone.destroy();
    assert_eq!(gone.commit().await.unwrap(), None);
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();

    for forged in forgeries(&wire) {
        assert!(loader.load(&forged).await.unwrap().is_none(), "{forged}");
        assert!(rotated.load(&forged).await.unwrap().is_none(), "{forged}");
    }
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;
    // Signed right, but no live session: one load, no session.
    assert!(loader.load(&dead).await.unwrap().is_none());
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), &["hgetall"]).await;

    // Rotated keys load the old-key token; its commit returns it signed with the new key.
    let loaded = rotated.load(&wire).await.unwrap().expect("live");
    assert_eq!(
        loaded.get::<String>("a").await.unwrap().as_deref(),
        Some("1")
    );
    let resigned = loaded.commit().await.unwrap().expect("live");
    assert_eq!(&resigned[..43], &wire[..43]);
    assert_ne!(resigned, wire);
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), &["hgetall"]).await;
    assert!(rotated.load(&resigned).await.unwrap().is_some());
    assert!(
        loader.load(&resigned).await.unwrap().is_none(),
        "not signed with KEY"
    );
    // With the local cache, the session `rotated` just loaded is served from memory.
    let read_again: &[&str] = if backend.cache.is_some() {
        &[]
    } else {
        &["hgetall"]
    };
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), read_again).await;
}
