//! Secrets stay secret: signing keys under 32 bytes are refused (the error never shows the
//! key), and no token, tag or key appears in the `Debug` output of `Session` (in a request and
//! from the loader), `SessionLayer`, `SessionService`, `SigningKeys`, `Carrier` or
//! `SessionLoader`.

use axum::{Router, routing::get};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use tower::Layer;

use super::{A, B, bare};
use crate::harness::{TOKEN_HEADER, a_session_on_each_carrier, app, get_with, session_cookie};
use tower_scs::{Carrier, Error, MIN_KEY_BYTES, MemoryStore, Session, SessionLayer, SigningKeys};

#[test]
fn signing_keys_under_32_bytes_are_refused() {
    assert_eq!(MIN_KEY_BYTES, 32);
    for len in [0, 1, 16, 31] {
        let key = vec![b'k'; len];
        let err = SigningKeys::new([&key]).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains(&format!("{len} bytes")), "{err}");
        let encoded = URL_SAFE_NO_PAD.encode(&key);
        let err = SigningKeys::from_base64([&encoded]).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(len == 0 || !err.to_string().contains(&encoded), "{err}");
        // Behind a good key too.
        let err = SigningKeys::new([&A[..], key.as_slice()]).unwrap_err();
        assert!(err.to_string().contains("signing key 2"), "{err}");
    }
    assert!(SigningKeys::new(Vec::<Vec<u8>>::new()).is_err(), "no key");
    assert_eq!(SigningKeys::new([[b'k'; 32]]).unwrap().len(), 1);
    let encoded = URL_SAFE_NO_PAD.encode(A);
    assert_eq!(SigningKeys::from_base64([encoded]).unwrap().len(), 1);
}

/// The session's `Debug` output at each stage of a request that reads, writes, commits by hand
/// and renews it, one per line; then the tokens it had.
async fn debug_route(s: Session) -> Result<String, Error> {
    let mut out = vec![format!("{s:?}")];
    s.get::<String>("who").await?;
    out.push(format!("{s:#?}"));
    s.insert("k", "v");
    out.push(format!("{s:?}"));
    let committed = s.commit().await?.unwrap_or_default();
    out.push(format!("{s:#?}"));
    s.renew_token().await?;
    out.push(format!("{s:?}"));
    let renewed = s.token().await?.unwrap_or_default();
    out.extend([committed, renewed]);
    Ok(out.join("\n"))
}

/// Asserts no `debugs` holds a token of `tokens` (whole, bare, or its tag) or a key of the
/// layer's (as text, in base64, or as the start of its byte list).
#[track_caller]
fn assert_no_secret(debugs: &[String], tokens: &[String]) {
    let mut secrets = Vec::new();
    for token in tokens {
        assert_eq!(token.len(), 87, "{token}");
        secrets.extend([token.clone(), bare(token).into(), token[44..].into()]);
    }
    for key in [A, B] {
        let text = String::from_utf8_lossy(key).into_owned();
        let bytes = format!("{:?}", &key[..4]).trim_end_matches(']').to_owned();
        secrets.extend([text, URL_SAFE_NO_PAD.encode(key), bytes]);
    }
    for debug in debugs {
        for secret in &secrets {
            assert!(!debug.contains(secret.as_str()), "{secret} in {debug}");
        }
    }
}

/// Every `Debug` output near a signed token: `Session` in a request and from the loader,
/// `SessionLayer`, `SessionService`, `SigningKeys`, `Carrier`, `SessionLoader`. None shows a
/// token, a tag or a key; each still says what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_tag_or_key_in_debug_output() {
    let carriers = [
        Carrier::cookie(),
        Carrier::header(TOKEN_HEADER),
        Carrier::bearer("x-answer"),
    ];
    let layer = SessionLayer::new(MemoryStore::new())
        .carriers(carriers.clone())
        .signing_keys(SigningKeys::new([A, B]).unwrap());
    let loader = layer.loader();
    let debug_app = Router::new()
        .route("/debug", get(debug_route))
        .layer(layer.clone());
    let app = app(layer.clone()).merge(debug_app);

    let (wire, _) = a_session_on_each_carrier(&app).await;
    let res = get_with(&app, "/debug", [session_cookie(&wire)]).await;
    let mut lines: Vec<String> = res.body.lines().map(str::to_owned).collect();
    let mut tokens = lines.split_off(lines.len() - 2);
    tokens.extend([wire.clone(), res.cookie_token()]);
    let mut debugs = lines;
    debugs.extend(carriers.iter().map(|c| format!("{c:?}")));
    let service = layer.layer(tower::service_fn(|()| async { Ok::<_, Error>(()) }));
    for debug in [
        format!("{layer:?}"),
        format!("{layer:#?}"),
        format!("{service:?}"),
    ] {
        debugs.push(debug);
    }
    debugs.extend([
        format!("{:?}", SigningKeys::new([A, B]).unwrap()),
        format!("{loader:?}"),
    ]);
    let loaded = loader.load(&tokens[3]).await.unwrap().expect("live");
    debugs.push(format!("{loaded:?}"));
    loaded.insert("k", "w");
    tokens.extend(loaded.commit().await.unwrap());
    debugs.push(format!("{loaded:#?}"));

    assert_no_secret(&debugs, &tokens);
    let all = debugs.join("\n");
    for says in [
        "Session {",
        "SessionLayer",
        "SessionService",
        "SessionLoader",
    ] {
        assert!(all.contains(says), "{says}: {all}");
    }
    assert!(all.contains("SigningKeys { keys: 2"), "{all}");
    assert!(
        all.contains("Carrier::header(\"x-session-token\")"),
        "{all}"
    );
}
