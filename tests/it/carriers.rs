//! The token carriers through the real layer, every test run on both stores (`both_stores!`):
//!
//! - header in, header out: the token, an empty value after a destroy; `Vary` on the header
//!   (not on `Cookie`), `Cache-Control: private` on the responses that carry a token and on
//!   no other; an empty value too when the deadline has passed at commit;
//! - bearer: `Authorization: Bearer` read (the scheme in any case), other schemes ignored, as
//!   if absent: never an error, no session, no store call;
//! - several carriers: the first with an acceptable token gives the session and the answer goes
//!   back on it; without a token, on the first carrier the request used at all, else the first
//!   listed;
//! - malformed, oversized or duplicated header values: a fresh session, no store call (MONITOR
//!   on the test's own Redis);
//! - renew, destroy and session fixation over the header carriers.
//!
//! What a client sends in a token's place never coming back in a response: `carriers/injection.rs`.

use http::{HeaderValue, header};

use crate::harness::{
    Backend, Client, Header, HeaderClient, NONE, READ_OF_OWN_WRITE, TOKEN_HEADER, Via,
    assert_calls, assert_valid_token, authorization, get_with, made_up_token, monitor,
    session_cookie, token_header,
};
use tower_scs::{Carrier, SessionLayer};

mod injection;

crate::both_stores!(
    header_in_header_out,
    bearer_reads_authorization_and_ignores_other_schemes,
    carriers_are_tried_in_order_and_answered_on_the_one_used,
    a_fresh_session_answers_on_the_first_carrier_used,
    bad_header_values_are_no_session_and_no_store_call,
    renew_and_destroy_over_the_header_carrier,
    no_fixation_over_header_or_bearer,
);

type Configure = fn(SessionLayer) -> SessionLayer;

fn header_only(layer: SessionLayer) -> SessionLayer {
    layer.carriers([Carrier::header(TOKEN_HEADER)])
}

fn bearer_only(layer: SessionLayer) -> SessionLayer {
    layer.carriers([Carrier::bearer(TOKEN_HEADER)])
}

fn cookie_then_header(layer: SessionLayer) -> SessionLayer {
    layer.carriers([Carrier::cookie(), Carrier::header(TOKEN_HEADER)])
}

const PUT: &str = "/put?key=a&value=1";

async fn header_in_header_out(backend: Backend) {
    let app = backend.app(header_only).await;
    let mut client = HeaderClient::new(&app, Via::Header);
    let res = client.get(PUT).await;
    let token = res.header_token();
    assert_valid_token(&token);
    assert_eq!(
        res.vary_fields(),
        [TOKEN_HEADER],
        "Vary on the header, not Cookie"
    );
    assert!(backend.stored(&token).await);

    // A read: nothing to answer, so no token and no Cache-Control; Vary all the same.
    let res = client.get("/get?key=a").await;
    assert_eq!(res.body, "1");
    res.assert_no_token("a read");
    assert_eq!(res.vary_fields(), [TOKEN_HEADER]);
    // A write: the same token again.
    assert_eq!(client.get("/put?key=b&value=2").await.header_token(), token);

    // A destroy: an empty value, private, and the token is dead.
    let res = client.get("/destroy").await;
    assert_eq!(res.answer().as_deref(), Some(""), "{res:?}");
    assert_eq!(res.cache_directives(), ["private"]);
    assert!(res.set_cookie_headers().is_empty());
    assert_eq!(client.token, None);
    assert!(!backend.stored(&token).await);
    let res = HeaderClient::with_token(&app, Via::Header, &token)
        .get("/get?key=a")
        .await;
    assert_eq!(res.body, NONE);
    res.assert_no_token("a destroyed token");

    // A deadline in the past ends the session at commit: an empty value too.
    let mut other = HeaderClient::new(&app, Via::Header);
    other.get(PUT).await;
    let res = other.get("/set_deadline?secs=-10").await;
    assert_eq!(res.answer().as_deref(), Some(""), "{res:?}");

    // The cookie is no carrier of this layer: a live token in it is not read.
    other.get("/put?key=c&value=3").await;
    let live = other.token.clone().unwrap();
    let res = Client::with_token(&app, &live).get("/get?key=c").await;
    assert_eq!(res.body, NONE);
    assert_eq!(other.get("/get?key=c").await.body, "3");
}

async fn bearer_reads_authorization_and_ignores_other_schemes(backend: Backend) {
    let app = backend.app(bearer_only).await;
    let mut client = HeaderClient::new(&app, Via::Bearer);
    let res = client.get(PUT).await;
    let token = res.header_token();
    assert_eq!(res.vary_fields(), ["authorization"]);
    assert_eq!(client.get("/get?key=a").await.body, "1");
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let auth = authorization(&format!("{scheme} {token}"));
        let res = get_with(&app, "/get?key=a", [auth]).await;
        assert_eq!(res.body, "1", "{scheme}");
    }
    // Another scheme's credentials beside the bearer token do not spoil it.
    let basic = authorization("Basic dXNlcjpwYXNz");
    let bearer = authorization(&format!("Bearer {token}"));
    let res = get_with(&app, "/get?key=a", [basic, bearer.clone()]).await;
    assert_eq!(res.body, "1");

    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();
    let mut ignored: Vec<Vec<Header>> = [
        format!("Basic {token}"),
        format!("Token {token}"),
        format!("Bearer{token}"),
        format!("Bearer: {token}"),
        format!("Bearer {token}, Bearer {token}"),
        token.clone(),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Digest username=\"a\", realm=\"b\"".to_owned(),
    ]
    .iter()
    .map(|v| vec![authorization(v)])
    .collect();
    ignored.push(vec![bearer.clone(), bearer]); // two bearer credentials: ambiguous
    for headers in &ignored {
        for uri in ["/get?key=a", "/keys", "/pop?key=a", "/ping"] {
            let res = get_with(&app, uri, headers.clone()).await;
            assert_ne!(res.body, "1", "{uri} {headers:?}");
            res.assert_no_token(&format!("{uri} {headers:?}"));
        }
    }
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;

    // A write under another scheme starts a fresh session; the bearer's is untouched.
    let res = get_with(&app, "/put?key=a&value=2", [authorization("Basic eDp5")]).await;
    assert_ne!(res.header_token(), token);
    assert_eq!(client.get("/get?key=a").await.body, "1");
}

async fn carriers_are_tried_in_order_and_answered_on_the_one_used(backend: Backend) {
    let app = backend.app(cookie_then_header).await;
    let res = get_with(&app, "/put?key=who&value=browser", []).await;
    let browser = res.cookie_token();
    assert_eq!(res.vary_fields(), ["cookie", TOKEN_HEADER]);
    // A malformed header makes the header the carrier used: the new session answers there.
    let res = get_with(&app, "/put?key=who&value=api", [token_header("nope")]).await;
    let api = res.header_token();
    assert_eq!(res.vary_fields(), ["cookie", TOKEN_HEADER]);

    // The cookie's token in the header: read there, answered there.
    let res = get_with(&app, "/put?key=n&value=1", [token_header(&browser)]).await;
    assert_eq!(res.header_token(), browser);
    // Both carriers, two sessions: the cookie, first listed, gives the session and the answer.
    let both = [session_cookie(&browser), token_header(&api)];
    let res = get_with(&app, "/put?key=both&value=1", both.clone()).await;
    assert_eq!(res.cookie_token(), browser);
    assert_eq!(get_with(&app, "/get?key=who", both).await.body, "browser");
    let res = HeaderClient::with_token(&app, Via::Header, &api)
        .get("/get?key=both")
        .await;
    assert_eq!(res.body, NONE);
    // A malformed cookie beside a valid header token: the header's session, answered there.
    let res = get_with(
        &app,
        "/put?key=x&value=1",
        [session_cookie("nope"), token_header(&api)],
    )
    .await;
    assert_eq!(res.header_token(), api);

    // The header listed first: it wins over the cookie.
    let reversed = backend
        .app(|l| l.carriers([Carrier::header(TOKEN_HEADER), Carrier::cookie()]))
        .await;
    let both = [session_cookie(&browser), token_header(&api)];
    assert_eq!(
        get_with(&reversed, "/get?key=who", both.clone()).await.body,
        "api"
    );
    let res = get_with(&reversed, "/put?key=y&value=1", both).await;
    assert_eq!(res.header_token(), api);
}

async fn a_fresh_session_answers_on_the_first_carrier_used(backend: Backend) {
    let app = backend.app(cookie_then_header).await;
    let unknown = made_up_token("never issued");
    // No carrier used: the first listed, the cookie.
    get_with(&app, PUT, []).await.cookie_token();
    // Only the header used (malformed, or a token the store does not hold): the header.
    get_with(&app, PUT, [token_header("nope")])
        .await
        .header_token();
    let res = get_with(&app, PUT, [token_header(&unknown)]).await;
    assert_ne!(res.header_token(), unknown);
    // Both used: the cookie, the first of them in the list.
    let both = [session_cookie("nope"), token_header("nope")];
    get_with(&app, PUT, both).await.cookie_token();
    // A cookie of another name is no use of the cookie carrier.
    let other = (header::COOKIE, HeaderValue::from_static("theme=dark"));
    get_with(&app, PUT, [other, token_header("nope")])
        .await
        .header_token();

    // The header listed first: a request using neither is answered in the header.
    let reversed = backend
        .app(|l| l.carriers([Carrier::header(TOKEN_HEADER), Carrier::cookie()]))
        .await;
    get_with(&reversed, PUT, []).await.header_token();
    get_with(&reversed, PUT, [session_cookie("nope")])
        .await
        .cookie_token();

    // Another Authorization scheme is no use of the bearer carrier; a bad bearer token is.
    let bearer_first = backend
        .app(|l| l.carriers([Carrier::bearer(TOKEN_HEADER), Carrier::cookie()]))
        .await;
    let basic = authorization("Basic eDp5");
    get_with(&bearer_first, PUT, [basic, session_cookie("nope")])
        .await
        .cookie_token();
    let bad_bearer = authorization("Bearer nope");
    get_with(&bearer_first, PUT, [bad_bearer, session_cookie("nope")])
        .await
        .header_token();
}

/// Header values that are no token: near misses of `live` (a live session's token), globs,
/// CR/LF spelt out, 100 kB, bytes that are not UTF-8, and `live` sent twice or beside another
/// value.
fn bad_headers(live: &str) -> Vec<Vec<Header>> {
    let non_canonical = format!("{}B", &live[..42]); // the last character's low bits set
    let mut all: Vec<Vec<Header>> = [
        String::new(),
        "*".to_owned(),
        "scs:session:*".to_owned(),
        format!("scs:session:{live}"),
        live[..42].to_owned(),
        format!("{live}A"),
        non_canonical,
        format!("{live};"),
        format!("{live},{live}"),
        format!("{live}, {live}"),
        format!("{live} x"),
        format!("{live}\tx"),
        format!("\"{live}\""),
        format!("session={live}"),
        format!("Bearer {live}"),
        format!("{live}%0D%0A"),
        "%0D%0AFLUSHALL%0D%0A".to_owned(),
        "A".repeat(100_000),
        live.repeat(1_000),
    ]
    .into_iter()
    .map(|v| vec![token_header(v)])
    .collect();
    all.push(vec![token_header([live.as_bytes(), b"\xff"].concat())]);
    all.push(vec![token_header(
        [b"\xc3\xa9", &live.as_bytes()[2..]].concat(),
    )]);
    all.push(vec![token_header(live), token_header(live)]);
    all.push(vec![token_header(live), token_header("nope")]);
    all.push(vec![token_header("nope"), token_header(live)]);
    all
}

async fn bad_header_values_are_no_session_and_no_store_call(backend: Backend) {
    let app = backend.app(header_only).await;
    let mut owner = HeaderClient::new(&app, Via::Header);
    owner.get(PUT).await;
    let live = owner.token.clone().unwrap();
    let mut monitor = monitor(&backend).await;
    let mut before = backend.calls.get();
    for (i, headers) in bad_headers(&live).into_iter().enumerate() {
        let what = |uri: &str| format!("{uri}, bad header {i}");
        for uri in ["/get?key=a", "/keys", "/contains?key=a", "/pop?key=a"] {
            let res = get_with(&app, uri, headers.clone()).await;
            let nothing = res.body == NONE || res.body.is_empty() || res.body == "false";
            assert!(nothing, "{}: {}", what(uri), res.body);
            res.assert_no_token(&what(uri));
        }
        for uri in ["/remove?key=a", "/clear", "/ping"] {
            get_with(&app, uri, headers.clone())
                .await
                .assert_no_token(&what(uri));
        }
        let res = get_with(&app, "/destroy", headers.clone()).await;
        assert_eq!(res.answer().as_deref(), Some(""), "{}", what("/destroy"));
    }
    assert_calls(&backend, &mut monitor, &mut before, (0, 0, 0), &[]).await;
    // The live session is untouched; its token alone costs one load (the control).
    assert_eq!(owner.get("/get?key=a").await.body, "1");
    let expected = [READ_OF_OWN_WRITE];
    assert_calls(&backend, &mut monitor, &mut before, (1, 0, 0), &expected).await;
}

async fn renew_and_destroy_over_the_header_carrier(backend: Backend) {
    let app = backend.app(header_only).await;
    let mut client = HeaderClient::new(&app, Via::Header);
    client.get("/put?key=user&value=alice").await;
    let old = client.token.clone().unwrap();
    let new = client.get("/renew").await.header_token();
    assert_ne!(new, old);
    assert_valid_token(&new);
    assert_eq!(client.get("/get?key=user").await.body, "alice");

    // The old token is dead: it reads nothing, and a write with it starts afresh.
    let mut stale = HeaderClient::with_token(&app, Via::Header, &old);
    let res = stale.get("/get?key=user").await;
    assert_eq!(res.body, NONE);
    res.assert_no_token("the renewed token");
    let fresh = stale
        .get("/put?key=user&value=mallory")
        .await
        .header_token();
    assert!(fresh != old && fresh != new);
    assert!(!backend.stored(&old).await);
    assert_eq!(client.get("/get?key=user").await.body, "alice");

    // Destroy then write in one request: a new token, in the header; the old one is dead.
    let newest = client
        .get("/destroy_put?key=k&value=v")
        .await
        .header_token();
    assert_ne!(newest, new);
    assert_eq!(client.get("/get?key=user").await.body, NONE);
    assert_eq!(client.get("/get?key=k").await.body, "v");
    let res = HeaderClient::with_token(&app, Via::Header, &new)
        .get("/get?key=k")
        .await;
    assert_eq!(res.body, NONE);
}

async fn no_fixation_over_header_or_bearer(backend: Backend) {
    let carriers: [(Via, Configure); 2] = [(Via::Header, header_only), (Via::Bearer, bearer_only)];
    for (via, configure) in carriers {
        let app = backend.app(configure).await;
        // A token the client chose is never adopted.
        let chosen = made_up_token(&format!("chosen by an attacker, {via:?}"));
        let mut victim = HeaderClient::with_token(&app, via, &chosen);
        assert_eq!(victim.get("/get?key=user").await.body, NONE);
        let issued = victim
            .get("/put?key=user&value=victim")
            .await
            .header_token();
        assert_ne!(issued, chosen, "{via:?}");
        assert!(!backend.stored(&chosen).await);
        let mut attacker = HeaderClient::with_token(&app, via, &chosen);
        assert_eq!(attacker.get("/get?key=user").await.body, NONE);

        // A real token planted by the attacker dies with the login's renew.
        let mut attacker = HeaderClient::new(&app, via);
        attacker.get("/put?key=visitor&value=attacker").await;
        let planted = attacker.token.clone().unwrap();
        let mut victim = HeaderClient::with_token(&app, via, &planted);
        victim.get("/renew").await.header_token();
        victim.get("/put?key=user&value=victim").await;
        assert_ne!(victim.token.as_deref(), Some(planted.as_str()));
        assert_eq!(attacker.get("/get?key=user").await.body, NONE, "{via:?}");
        assert_eq!(victim.get("/get?key=visitor").await.body, "attacker");
    }
}
