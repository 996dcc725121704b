//! The commit plan, without a layer: what [`Session::plan`] decides from what a request did.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use super::*;
use crate::{
    MemoryStore,
    config::Config,
    store::{Change, Mode, SessionStore},
    token, wire,
};

const HOUR: Duration = Duration::from_secs(3600);

/// A layer's shared part over a memory store holding one session (`token`, with `values`),
/// whose expiry is `expires_in` from now.
async fn stored(
    config: Config,
    values: &[(&str, &str)],
    expires_in: Duration,
) -> (Arc<Shared>, String) {
    let store = MemoryStore::new();
    let token = token::generate();
    let id = token::store_id(&token, config.hash_token_in_store).into_owned();
    let now = SystemTime::now();
    let mut change = Change::create(now, now + 24 * HOUR).with_idle_ttl(Some(expires_in));
    for (k, v) in values {
        change = change.with_set(*k, *v);
    }
    store.commit(&id, &change).await.unwrap().unwrap();
    (Arc::new(Shared::new(config, Arc::new(store))), token)
}

fn session(shared: &Arc<Shared>, token: Option<&str>) -> Session {
    let token = token.map(|t| wire::accept(&shared.config, t).expect("a well-formed token"));
    Session::new(shared.clone(), token, None)
}

fn write_of(plan: Plan) -> Write {
    match plan {
        Plan::Write(write) => *write,
        Plan::Nothing => panic!("a write expected, got nothing"),
        Plan::Failed(e) => panic!("a write expected, got failure {e}"),
        Plan::Destroy { .. } => panic!("a write expected, got a destroy"),
        Plan::Resend => panic!("a write expected, got a resend"),
    }
}

#[tokio::test]
async fn an_untouched_or_only_read_session_plans_nothing() {
    let (shared, token) = stored(Config::default(), &[("a", "1")], HOUR).await;
    let untouched = session(&shared, Some(&token));
    assert!(!untouched.needs_commit());
    assert!(matches!(untouched.plan(SystemTime::now()), Plan::Nothing));
    let read = session(&shared, Some(&token));
    assert_eq!(read.get::<i32>("a").await.unwrap(), Some(1));
    assert!(
        read.needs_commit(),
        "a loaded session is looked at after the handler"
    );
    assert!(matches!(read.plan(SystemTime::now()), Plan::Nothing));
}

#[tokio::test]
async fn a_write_to_a_new_session_creates_under_a_new_token() {
    let (shared, _) = stored(Config::default(), &[], HOUR).await;
    let s = session(&shared, None);
    s.insert("a", 1);
    let now = SystemTime::now();
    let w = write_of(s.plan(now));
    assert!(token::is_well_formed(&w.token));
    let deadline = now + shared.config.lifetime;
    assert_eq!(w.change.mode, Mode::Create { deadline });
    assert_eq!(w.change.set, [("a".to_owned(), "1".to_owned())]);
    assert_eq!(w.change.max_bytes, shared.config.max_session_bytes);
    assert!(w.delete.is_empty() && w.merged_ids.is_empty() && w.renewed_from.is_none());
}

#[tokio::test]
async fn writes_to_a_stored_session_update_it_with_only_what_changed() {
    let (shared, token) = stored(Config::default(), &[("a", "1"), ("b", "2")], HOUR).await;
    let s = session(&shared, Some(&token));
    s.remove("a");
    s.insert("c", 3);
    s.remember_me(true);
    let w = write_of(s.plan(SystemTime::now()));
    assert_eq!(w.token, token);
    assert_eq!(w.change.mode, Mode::Update { deadline: None });
    assert_eq!(w.change.removed, ["a"]);
    assert_eq!(w.change.set, [("c".to_owned(), "3".to_owned())]);
    assert_eq!(w.change.remember, Some(true));
    assert!(!w.change.cleared);

    let cleared = session(&shared, Some(&token));
    cleared.clear();
    let w = write_of(cleared.plan(SystemTime::now()));
    assert!(w.change.cleared && w.change.set.is_empty());
}

#[tokio::test]
async fn a_cookie_for_a_session_that_is_gone_gets_a_new_one() {
    let (shared, _) = stored(Config::default(), &[], HOUR).await;
    let unknown = token::generate();
    let s = session(&shared, Some(&unknown));
    assert_eq!(s.get::<i32>("a").await.unwrap(), None);
    s.insert("a", 1);
    let w = write_of(s.plan(SystemTime::now()));
    assert_ne!(w.token, unknown);
    assert!(w.change.is_create());
}

#[tokio::test]
async fn destroy_deletes_the_stored_id() {
    let config = Config {
        hash_token_in_store: true,
        ..Config::default()
    };
    let (shared, token) = stored(config, &[("a", "1")], HOUR).await;
    let s = session(&shared, Some(&token));
    s.insert("b", 2);
    s.destroy();
    let Plan::Destroy { delete } = s.plan(SystemTime::now()) else {
        panic!("a destroy expected");
    };
    assert_eq!(delete, [token::store_id(&token, true).into_owned()]);
}

#[tokio::test]
async fn a_value_that_cannot_be_stored_fails_the_request() {
    let (shared, _) = stored(Config::default(), &[], HOUR).await;
    let s = session(&shared, None);
    let unserializable = std::collections::HashMap::from([((1, 2), 3)]);
    s.insert("a", unserializable);
    assert!(matches!(
        s.plan(SystemTime::now()),
        Plan::Failed(Error::Value { .. })
    ));
    let s = session(&shared, None);
    s.insert("k".repeat(1025), 1);
    assert!(matches!(
        s.plan(SystemTime::now()),
        Plan::Failed(Error::TooLarge(_))
    ));
}

#[tokio::test]
async fn a_read_touches_only_once_less_than_the_idle_timeout_remains() {
    let idle = Duration::from_secs(600);
    let config = Config {
        idle_timeout: Some(idle),
        ..Config::default()
    };
    // 1.1 × idle left (just written): no touch. Under idle left: a touch, with 10% slack.
    for (left, touched) in [
        (idle + idle / 10, false),
        (idle - Duration::from_secs(1), true),
    ] {
        let (shared, token) = stored(config.clone(), &[("a", "1")], left).await;
        let s = session(&shared, Some(&token));
        s.get::<i32>("a").await.unwrap();
        match s.plan(SystemTime::now()) {
            Plan::Nothing => assert!(!touched, "{left:?} left: a touch expected"),
            plan => {
                assert!(touched, "{left:?} left: no touch expected");
                let w = write_of(plan);
                assert_eq!(w.token, token);
                assert_eq!(w.change.idle_ttl, Some(idle + idle / 10));
                assert_eq!(w.change.mode, Mode::Update { deadline: None });
                assert!(w.change.set.is_empty() && w.change.removed.is_empty());
            }
        }
    }
}

#[tokio::test]
async fn renew_creates_the_new_token_and_hands_the_old_one_over() {
    let (shared, token) = stored(Config::default(), &[("a", "1")], HOUR).await;
    let s = session(&shared, Some(&token));
    s.set_owner("ann");
    s.renew_token().await.unwrap();
    s.insert("b", 2);
    let w = write_of(s.plan(SystemTime::now()));
    assert_ne!(w.token, token);
    assert_eq!(w.renewed_from.as_deref(), Some(token.as_str()));
    assert!(w.change.is_create());
    let set: Vec<&str> = w.change.set.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(set, ["a", "b"]);
    assert_eq!(w.change.owner.as_deref(), Some("ann"));
    // If the hand-over fails, only what the request wrote itself goes on.
    let own = w.own().expect("the request wrote b");
    assert_eq!(own.set, [("b".to_owned(), "2".to_owned())]);
    assert_eq!(own.owner.as_deref(), Some("ann"));
}

/// A read's future is moved (into the handler's, then into axum's box) on every request, so
/// its size is a cost: it was 2.3 KB while the store call went down the async layers unboxed.
#[tokio::test]
async fn a_read_of_the_session_is_a_small_future() {
    let (shared, token) = stored(Config::default(), &[("a", "1")], HOUR).await;
    let s = session(&shared, Some(&token));
    let get = std::mem::size_of_val(&s.get::<String>("a"));
    let load = std::mem::size_of_val(&shared.load(&token));
    assert!(get <= 1024, "Session::get's future is {get} bytes");
    assert!(load <= 512, "Shared::load's future is {load} bytes");
}
