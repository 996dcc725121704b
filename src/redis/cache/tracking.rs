//! Turning `CLIENT TRACKING` on for every data connection of a store, hearing the
//! invalidations, and noticing the moment tracking may have stopped.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use fred::{
    clients::Client,
    error::{Error as FredError, ErrorKind},
    interfaces::{ClientInterface, ClientLike, EventInterface, PubsubInterface, TrackingInterface},
    prelude::Builder,
    types::{
        ClientState, ConnectHandle, RespVersion,
        client::Invalidation,
        config::{Server, ServerConfig},
    },
};
use tokio::sync::{
    Notify,
    broadcast::{
        Receiver,
        error::{RecvError, TryRecvError},
    },
    watch,
};

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
///
/// Tracking holds while no connection event came since it was turned on: `breaks` counts the
/// events (fred's error, reconnect, unresponsive and cluster-change notifications of every data
/// client and subscriber: fred tells of a closed connection at once, but its connection ids
/// can lag behind), `live` is the count it was turned on at, or [`OFF`].
#[derive(Debug)]
pub(crate) struct Tracking {
    prefix: String,
    breaks: Arc<AtomicU64>,
    live: AtomicU64,
    /// The subscribers of the tracking now on, kept to close them when it ends.
    subscribers: Mutex<Vec<Subscriber>>,
    /// Wakes the keeper: tracking broke.
    broken: Arc<Notify>,
    started: AtomicBool,
    on: watch::Sender<bool>,
}

/// `Tracking::live` while tracking is off.
const OFF: u64 = u64::MAX;

/// Our connection to one Redis server that the data connections to it redirect to.
#[derive(Debug)]
struct Subscriber {
    /// Its connection's id (`CLIENT ID`), the redirection's target.
    id: i64,
    /// Set when it is closed on purpose: its events then break nothing.
    retired: Arc<AtomicBool>,
    /// Its invalidations, for [`Tracking::drain`].
    pending: Receiver<Invalidation>,
    /// Dropped with the subscriber: its thread then closes the connection and ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Tracking {
    pub(super) fn new(prefix: String) -> Self {
        Tracking {
            prefix,
            breaks: Arc::new(AtomicU64::new(0)),
            live: AtomicU64::new(OFF),
            subscribers: Mutex::new(Vec::new()),
            broken: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            on: watch::Sender::new(false),
        }
    }

    /// Starts, once, the task that turns tracking on through `clients` and keeps it on.
    pub(crate) fn start(&self, cache: &Arc<Cache>, clients: &[Client]) {
        if !self.started.swap(true, SeqCst) {
            for client in clients {
                watch_events(client, self.breaks.clone(), self.broken.clone(), None);
            }
            let keeper = keep(Arc::downgrade(cache), clients.to_vec(), self.broken.clone());
            tokio::spawn(keeper);
        }
    }

    /// Waits until tracking is on.
    pub(crate) async fn ready(&self) {
        let mut on = self.on.subscribe();
        let _ = on.wait_for(|on| *on).await;
    }

    /// Whether tracking holds at this instant for the connection `client` sends a key through.
    pub(super) fn intact(&self, client: &Client) -> bool {
        let intact = self.holds() && client.state() == ClientState::Connected;
        if !intact {
            self.broken.notify_one();
        }
        intact
    }

    fn holds(&self) -> bool {
        self.live.load(SeqCst) == self.breaks.load(SeqCst)
    }

    /// Applies, here and now, every invalidation fred has handed over: each hit is served only
    /// after them, and the keeper drains at least once a second.
    pub(super) fn drain(&self, cache: &Cache) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for subscriber in subscribers.iter_mut() {
            loop {
                match subscriber.pending.try_recv() {
                    Ok(invalidation) => apply(cache, &self.prefix, &invalidation),
                    Err(TryRecvError::Lagged(_)) => cache.flush(),
                    Err(TryRecvError::Empty | TryRecvError::Closed) => break,
                }
            }
        }
    }

    /// Tracking is on since `since` (the break count before it was turned on), through
    /// `subscribers`; or off (`None`): the old subscribers are closed.
    fn set(&self, on: Option<(u64, Vec<Subscriber>)>) {
        let (live, subscribers) = on.unwrap_or((OFF, Vec::new()));
        self.live.store(live, SeqCst);
        let old = std::mem::replace(
            &mut *self.subscribers.lock().unwrap_or_else(|e| e.into_inner()),
            subscribers,
        );
        self.on.send_replace(live != OFF);
        for subscriber in old {
            subscriber.retired.store(true, SeqCst);
        }
    }
}

/// Counts every connection event of `client` in `breaks` and wakes the keeper, until `retired`
/// is set or the client is gone.
fn watch_events(
    client: &Client,
    breaks: Arc<AtomicU64>,
    broken: Arc<Notify>,
    retired: Option<Arc<AtomicBool>>,
) {
    let (mut errors, mut reconnects) = (client.error_rx(), client.reconnect_rx());
    let (mut unresponsive, mut changes) = (client.unresponsive_rx(), client.cluster_change_rx());
    tokio::spawn(async move {
        loop {
            let closed = tokio::select! {
                e = errors.recv() => e.is_err_and(|e| matches!(e, RecvError::Closed)),
                r = reconnects.recv() => r.is_err_and(|e| matches!(e, RecvError::Closed)),
                u = unresponsive.recv() => u.is_err_and(|e| matches!(e, RecvError::Closed)),
                c = changes.recv() => c.is_err_and(|e| matches!(e, RecvError::Closed)),
            };
            if retired.as_ref().is_some_and(|r| r.load(SeqCst)) {
                return;
            }
            breaks.fetch_add(1, SeqCst);
            broken.notify_one();
            if closed {
                return;
            }
        }
    });
}

/// Turns tracking on, waits until it breaks, drops the cache, and starts again; ends with the
/// store.
async fn keep(cache: Weak<Cache>, clients: Vec<Client>, broken: Arc<Notify>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        let since = strong.tracking.breaks.load(SeqCst);
        match enable(&strong, &clients).await {
            Ok(subscribers) => {
                strong.flush();
                strong.tracking.set(Some((since, subscribers)));
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
            strong.tracking.drain(&strong);
            if !strong.tracking.holds() {
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
async fn enable(cache: &Arc<Cache>, clients: &[Client]) -> Result<Vec<Subscriber>, FredError> {
    let mut servers: Vec<Server> = Vec::new();
    for client in clients {
        if client.state() != ClientState::Connected {
            return Err(FredError::new(ErrorKind::IO, "not connected"));
        }
        for server in client.connection_ids().into_keys() {
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
    }
    let mut subscribers = Vec::with_capacity(servers.len());
    for server in &servers {
        subscribers.push(subscribe(cache, &clients[0], server).await?);
    }
    for client in clients {
        for (server, subscriber) in servers.iter().zip(&subscribers) {
            if client.is_clustered() {
                redirect(&client.with_cluster_node(server), subscriber.id).await?;
            } else {
                redirect(client, subscriber.id).await?;
            }
        }
    }
    Ok(subscribers)
}

/// `CLIENT TRACKING ON REDIRECT <target>` on the connection `client` sends through.
async fn redirect(client: &impl ClientInterface, target: i64) -> Result<(), FredError> {
    let none = Vec::<String>::new;
    // Off first: a connection already tracking keeps its old redirection otherwise.
    client
        .client_tracking::<(), _, _>("off", None, none(), false, false, false, false)
        .await?;
    client
        .client_tracking::<(), _, _>("on", Some(target), none(), false, false, false, false)
        .await
}

/// A RESP2 connection to `server` subscribed to the invalidation channel, with its listener.
///
/// It runs on a thread of its own, so that an invalidation is read off the socket as soon as
/// it arrives, however busy the application's runtime is.
async fn subscribe(
    cache: &Arc<Cache>,
    like: &Client,
    server: &Server,
) -> Result<Subscriber, FredError> {
    let client = subscriber_client(like, server)?;
    let pending = client.invalidation_rx();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let connection = client.clone();
    std::thread::Builder::new()
        .name("tower-scs invalidations".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let Ok(runtime) = runtime else {
                let error = FredError::new(ErrorKind::IO, "cannot start a runtime");
                let _ = ready_tx.send(Err(error));
                return;
            };
            runtime.block_on(async move {
                let task = match connect(&connection).await {
                    Ok((task, id)) => {
                        let _ = ready_tx.send(Ok(id));
                        task
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Until the subscriber is dropped (retired, or the store dropped).
                tokio::select! {
                    _ = task => {}
                    _ = stopped => {
                        let _ = connection.quit().await;
                    }
                }
            });
        })
        .map_err(|e| FredError::new(ErrorKind::IO, e.to_string()))?;
    let id = ready
        .await
        .map_err(|_| FredError::new(ErrorKind::IO, "the subscriber's thread ended"))??;
    // Watched once connected (its first connection is an event too); a loss before that shows
    // in its state.
    let retired = Arc::new(AtomicBool::new(false));
    let tracking = &cache.tracking;
    let (breaks, broken) = (tracking.breaks.clone(), tracking.broken.clone());
    watch_events(&client, breaks, broken, Some(retired.clone()));
    if client.state() != ClientState::Connected {
        return Err(FredError::new(
            ErrorKind::IO,
            "the subscriber lost its connection",
        ));
    }
    Ok(Subscriber {
        id,
        retired,
        pending,
        _stop: stop,
    })
}

/// A client like `like` (its credentials, timeouts and reconnect policy), but RESP2 and on
/// `server` alone.
fn subscriber_client(like: &Client, server: &Server) -> Result<Client, FredError> {
    let mut config = like.client_config();
    config.server = ServerConfig::Centralized {
        server: server.clone(),
    };
    // RESP2: a redirected flush then arrives as a message with a null key list, which fred
    // hands over as an invalidation of no keys.
    config.version = RespVersion::RESP2;
    let mut perf = like.perf_config();
    perf.broadcast_channel_capacity = INVALIDATION_BUFFER;
    let mut builder = Builder::from_config(config);
    builder
        .set_performance_config(perf)
        .set_connection_config(like.connection_config().clone());
    // With a reconnect policy fred notices a closed connection even while it is idle.
    if let Some(policy) = like.client_reconnect_policy() {
        builder.set_policy(policy);
    }
    builder.build()
}

/// Connects `client`, reads its connection's id and subscribes it to the invalidations.
async fn connect(client: &Client) -> Result<(ConnectHandle, i64), FredError> {
    let task = client.init().await?;
    // Before SUBSCRIBE: a RESP2 connection in subscribed mode takes no other command.
    let id = client.client_id::<i64>().await?;
    client.subscribe(INVALIDATE_CHANNEL).await?;
    Ok((task, id))
}

/// Drops what `invalidation` names, or everything on a flush (Redis names no keys).
fn apply(cache: &Cache, prefix: &str, invalidation: &Invalidation) {
    if invalidation.keys.is_empty() {
        return cache.flush();
    }
    for key in &invalidation.keys {
        if let Some(id) = key.as_str().and_then(|k| k.strip_prefix(prefix)) {
            cache.forget(id);
        }
    }
}
