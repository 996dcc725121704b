//! Turning `CLIENT TRACKING` on for every data connection of a store, hearing the
//! invalidations, and noticing the moment tracking may have stopped.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

use fred::{
    clients::Client,
    error::{Error as FredError, ErrorKind},
    interfaces::{ClientInterface, ClientLike, PubsubInterface, TrackingInterface},
    prelude::Builder,
    types::{
        RespVersion,
        config::{Server, ServerConfig},
    },
};
use tokio::sync::{Notify, broadcast::error::RecvError, watch};

use super::Cache;

/// The channel Redis publishes invalidations on, for connections that redirect to a subscriber.
const INVALIDATE_CHANNEL: &str = "__redis__:invalidate";
/// How often the keeper checks tracking when nothing woke it, so it is restored while idle.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to turn tracking on.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How many invalidations a subscriber buffers before its listener counts as lagging.
const INVALIDATION_BUFFER: usize = 4096;

/// The tracking state of one cache.
#[derive(Debug)]
pub(crate) struct Tracking {
    prefix: String,
    state: RwLock<Option<Tracked>>,
    /// Wakes the keeper: a check found tracking broken.
    broken: Arc<Notify>,
    started: AtomicBool,
    on: watch::Sender<bool>,
}

/// Tracking as it was turned on: the connections it holds for.
#[derive(Debug)]
struct Tracked {
    /// For each data client (by fred's client id), the connections tracking was turned on for.
    data: Vec<(String, HashMap<Server, i64>)>,
    subscribers: Vec<Subscriber>,
}

/// Our connection to one Redis server that the data connections to it redirect to.
#[derive(Debug)]
struct Subscriber {
    client: Client,
    ids: HashMap<Server, i64>,
    /// False once its listener stopped (the invalidation channel closed).
    listening: Arc<AtomicBool>,
}

impl Tracking {
    pub(super) fn new(prefix: String) -> Self {
        Tracking {
            prefix,
            state: RwLock::new(None),
            broken: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            on: watch::Sender::new(false),
        }
    }

    /// Starts, once, the task that turns tracking on through `clients` and keeps it on.
    pub(crate) fn start(&self, cache: &Arc<Cache>, clients: &[Client]) {
        if !self.started.swap(true, SeqCst) {
            let keeper = keep(Arc::downgrade(cache), clients.to_vec(), self.broken.clone());
            tokio::spawn(keeper);
        }
    }

    /// Waits until tracking is on.
    pub(crate) async fn ready(&self) {
        let mut on = self.on.subscribe();
        let _ = on.wait_for(|on| *on).await;
    }

    /// Whether, at this instant, the connection `client` sends a key through and every
    /// subscriber are the very connections tracking was turned on for.
    pub(super) fn intact(&self, client: &Client) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let intact = state.as_ref().is_some_and(|t| t.holds_for(client));
        if !intact {
            self.broken.notify_one();
        }
        intact
    }

    fn set(&self, tracked: Option<Tracked>) {
        let on = tracked.is_some();
        let old = std::mem::replace(
            &mut *self.state.write().unwrap_or_else(|e| e.into_inner()),
            tracked,
        );
        self.on.send_replace(on);
        if let Some(old) = old {
            for subscriber in old.subscribers {
                tokio::spawn(async move { subscriber.client.quit().await });
            }
        }
    }
}

impl Tracked {
    fn holds_for(&self, client: &Client) -> bool {
        let data = self
            .data
            .iter()
            .any(|(id, ids)| id == client.id() && client.connection_ids() == *ids);
        data && self.subscribers.iter().all(Subscriber::holds)
    }

    fn holds(&self, clients: &[Client]) -> bool {
        clients.iter().all(|c| self.holds_for(c))
    }
}

impl Subscriber {
    fn holds(&self) -> bool {
        self.listening.load(SeqCst) && self.client.connection_ids() == self.ids
    }
}

/// Turns tracking on, waits until it breaks, drops the cache, and starts again; ends with the
/// store.
async fn keep(cache: Weak<Cache>, clients: Vec<Client>, broken: Arc<Notify>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        match enable(&strong, &clients).await {
            Ok(tracked) => {
                strong.flush();
                strong.tracking.set(Some(tracked));
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                tracing::warn!(error = %e, "local session cache: cannot turn Redis tracking on; loads go to Redis");
                drop(strong);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        drop(strong);
        loop {
            let _ = tokio::time::timeout(CHECK_EVERY, broken.notified()).await;
            let Some(strong) = cache.upgrade() else {
                return;
            };
            let state = strong
                .tracking
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if !state.as_ref().is_some_and(|t| t.holds(&clients)) {
                break;
            }
        }
        let Some(strong) = cache.upgrade() else {
            return;
        };
        // No entry passes a check from here on, and in-flight inserts see the flush.
        strong.tracking.set(None);
        strong.flush();
        tracing::info!("local session cache dropped: a Redis connection was lost or replaced");
    }
}

/// Subscribes to every server the data clients are connected to and redirects each data
/// connection's tracking to that server's subscriber.
async fn enable(cache: &Arc<Cache>, clients: &[Client]) -> Result<Tracked, FredError> {
    let before: Vec<HashMap<Server, i64>> = clients.iter().map(|c| c.connection_ids()).collect();
    let mut servers: Vec<Server> = Vec::new();
    for ids in &before {
        if ids.is_empty() {
            return Err(FredError::new(ErrorKind::IO, "not connected"));
        }
        servers.extend(
            ids.keys()
                .filter(|s| !servers.contains(s))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    let mut subscribers = Vec::with_capacity(servers.len());
    for server in &servers {
        subscribers.push(subscribe(cache, &clients[0], server).await?);
    }
    for client in clients {
        for (server, subscriber) in servers.iter().zip(&subscribers) {
            let target = subscriber.ids.values().next().copied();
            if client.is_clustered() {
                redirect(&client.with_cluster_node(server), target).await?;
            } else if client.connection_ids().contains_key(server) {
                redirect(client, target).await?;
            }
        }
    }
    let data: Vec<_> = clients
        .iter()
        .map(|c| (c.id().to_owned(), c.connection_ids()))
        .collect();
    if data.iter().zip(&before).any(|((_, now), then)| now != then) {
        return Err(FredError::new(
            ErrorKind::IO,
            "a connection was replaced meanwhile",
        ));
    }
    Ok(Tracked { data, subscribers })
}

/// `CLIENT TRACKING ON REDIRECT <target>` on the connection `client` sends through.
async fn redirect(client: &impl ClientInterface, target: Option<i64>) -> Result<(), FredError> {
    let none = Vec::<String>::new;
    // Off first: a connection already tracking keeps its old redirection otherwise.
    client
        .client_tracking::<(), _, _>("off", None, none(), false, false, false, false)
        .await?;
    client
        .client_tracking::<(), _, _>("on", target, none(), false, false, false, false)
        .await
}

/// A RESP2 connection to `server` subscribed to the invalidation channel, with its listener.
async fn subscribe(
    cache: &Arc<Cache>,
    like: &Client,
    server: &Server,
) -> Result<Subscriber, FredError> {
    let mut config = like.client_config();
    config.server = ServerConfig::Centralized {
        server: server.clone(),
    };
    // RESP2: a redirected flush then arrives as a message with a null key list, which fred
    // hands over as an invalidation of no keys.
    config.version = RespVersion::RESP2;
    let mut perf = like.perf_config();
    perf.broadcast_channel_capacity = INVALIDATION_BUFFER;
    let client = Builder::from_config(config)
        .set_performance_config(perf)
        .set_connection_config(like.connection_config().clone())
        .build()?;
    let invalidations = client.invalidation_rx();
    client.init().await?;
    client.subscribe(INVALIDATE_CHANNEL).await?;
    let listening = Arc::new(AtomicBool::new(true));
    let prefix = cache.tracking.prefix.clone();
    tokio::spawn(listen(
        Arc::downgrade(cache),
        invalidations,
        prefix,
        listening.clone(),
    ));
    let ids = client.connection_ids();
    Ok(Subscriber {
        client,
        ids,
        listening,
    })
}

/// Applies invalidations to the cache until the subscriber's channel closes.
async fn listen(
    cache: Weak<Cache>,
    mut invalidations: tokio::sync::broadcast::Receiver<fred::types::client::Invalidation>,
    prefix: String,
    listening: Arc<AtomicBool>,
) {
    loop {
        let received = invalidations.recv().await;
        let Some(cache) = cache.upgrade() else { return };
        match received {
            // A flush: Redis names no keys.
            Ok(invalidation) if invalidation.keys.is_empty() => cache.flush(),
            Ok(invalidation) => {
                for key in &invalidation.keys {
                    if let Some(id) = key.as_str().and_then(|k| k.strip_prefix(prefix.as_str())) {
                        cache.forget(id);
                    }
                }
            }
            Err(RecvError::Lagged(_)) => cache.flush(),
            Err(RecvError::Closed) => {
                listening.store(false, SeqCst);
                cache.tracking.broken.notify_one();
                return;
            }
        }
    }
}
