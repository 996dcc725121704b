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
    interfaces::{ClientInterface, ClientLike, EventInterface},
    types::{ClientState, config::Server},
};
use tokio::sync::{Notify, broadcast::error::RecvError, watch};

use super::{
    Cache,
    socket::{Invalidated, Socket},
};

/// How often the keeper checks tracking when nothing woke it, so it is restored while idle.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to turn tracking on.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

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
    socket: Arc<Socket>,
    /// Dropped with the subscriber: its reader task then ends and the connection closes.
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
                watch_events(client, self.breaks.clone(), self.broken.clone());
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

    /// Applies, here and now, every invalidation that has reached a subscriber's socket: each
    /// hit and each read's ticket come after them. A closed socket breaks tracking.
    pub(super) fn drain(&self, cache: &Cache) {
        let subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for subscriber in subscribers.iter() {
            if !subscriber
                .socket
                .drain(true, |i| apply(cache, &self.prefix, i))
            {
                self.breaks.fetch_add(1, SeqCst);
                self.broken.notify_one();
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
        drop(old);
    }
}

/// Counts every connection event of `client` in `breaks` and wakes the keeper, until the
/// client is gone.
fn watch_events(client: &Client, breaks: Arc<AtomicU64>, broken: Arc<Notify>) {
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
                redirect(&client.with_cluster_node(server), subscriber.socket.id).await?;
            } else {
                redirect(client, subscriber.socket.id).await?;
            }
        }
    }
    Ok(subscribers)
}

/// `CLIENT TRACKING ON REDIRECT <target> NOLOOP` on the connection `client` sends through.
async fn redirect(client: &impl ClientInterface, target: i64) -> Result<(), FredError> {
    let none = Vec::<String>::new;
    // Off first: a connection already tracking keeps its old redirection otherwise.
    client
        .client_tracking::<(), _, _>("off", None, none(), false, false, false, false)
        .await?;
    // NOLOOP: no invalidation for a key this very connection changes. The store forgets the
    // entry itself around each of its writes (`RedisStore::forgetting`), and a key's reads and
    // writes go through one connection, so without it every write came back as a message to
    // read, decode and apply for nothing. Changes through any other connection still come.
    client
        .client_tracking::<(), _, _>("on", Some(target), none(), false, false, false, true)
        .await
}

/// A subscriber on `server` (see [`Socket`]), with a task that reads it whenever something
/// arrives, so that the cache keeps up while no request comes.
async fn subscribe(
    cache: &Arc<Cache>,
    like: &Client,
    server: &Server,
) -> Result<Subscriber, FredError> {
    let socket = Arc::new(Socket::connect(like, server).await?);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (reader, weak) = (socket.clone(), Arc::downgrade(cache));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = reader.readable() => {}
                _ = &mut stopped => return,
            }
            let Some(cache) = weak.upgrade() else {
                return;
            };
            // Its own socket, under the lock the hits take: read through tokio, which resets
            // the readiness (a socket not yet, or no longer, in use is read all the same).
            let tracking = &cache.tracking;
            if !reader.drain(false, |i| apply(&cache, &tracking.prefix, i)) {
                tracking.breaks.fetch_add(1, SeqCst);
                tracking.broken.notify_one();
                return;
            }
        }
    });
    Ok(Subscriber {
        socket,
        _stop: stop,
    })
}

/// Drops what `invalidated` names, or everything on a flush.
fn apply(cache: &Cache, prefix: &str, invalidated: Invalidated) {
    let keys = match invalidated {
        Invalidated::Everything => return cache.flush(),
        Invalidated::Keys(keys) => keys,
    };
    for key in &keys {
        super::super::keys::with_id_of(prefix, key, |id| cache.forget(id));
    }
}
