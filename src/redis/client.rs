//! The fred clients a [`RedisStore`] sends through ([`FredClient`], sealed), and
//! [`RedisStore::from_url`]'s ready-made pool.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use fred::{
    clients::{Client, Pool},
    error::ErrorKind,
    interfaces::{ClientLike, ClusterInterface},
    prelude::{Builder, Config, ReconnectPolicy},
    types::config::UnresponsiveConfig,
};

use super::RedisStore;
use crate::Error;

/// A fred client or pool that [`RedisStore`] can send its commands through: fred's
/// [`Client`] or [`Pool`]. The trait is sealed: the store relies on how each one orders the
/// commands of one key, so it is not meant to be implemented elsewhere.
pub trait FredClient: sealed::Sealed + Clone + Send + Sync + 'static {
    /// The client the next command goes through.
    fn client(&self) -> &Client;

    /// The client the commands on `key` go through (for a session's key, `key` is the session
    /// id): always the same one for a key, so that Redis runs the commands on one session in
    /// the order they were sent, and a command whose caller gave up (store timeout) can never
    /// land after a later one.
    fn client_for(&self, key: &[u8]) -> &Client {
        let _ = key;
        self.client()
    }

    /// Every client commands may go through (the local cache turns tracking on for each).
    fn clients(&self) -> &[Client];
}

pub(super) mod sealed {
    /// Only fred's own client types are [`FredClient`](super::FredClient)s.
    pub trait Sealed {}
    impl Sealed for fred::clients::Client {}
    impl Sealed for fred::clients::Pool {}
}

impl FredClient for Client {
    fn client(&self) -> &Client {
        self
    }

    fn clients(&self) -> &[Client] {
        std::slice::from_ref(self)
    }
}

impl FredClient for Pool {
    /// The next connected client of the pool.
    fn client(&self) -> &Client {
        self.next_connected()
    }

    fn clients(&self) -> &[Client] {
        Pool::clients(self)
    }

    fn client_for(&self, key: &[u8]) -> &Client {
        // Session ids are random, so the last few bytes of the key spread keys evenly; any stable
        // choice keeps one key's commands in order.
        let clients = self.clients();
        &clients[tail_hash(key) % clients.len()]
    }
}

impl<C: FredClient> RedisStore<C> {
    /// Whether Redis answers now: a `PING` through every connection of the client or pool,
    /// each bounded by the client's command timeout (1 s when it has none). A readiness check
    /// for a health endpoint, or, right after [`from_url`](RedisStore::from_url), a way to
    /// refuse to start without Redis:
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tower_scs::Error> {
    /// let store = tower_scs::RedisStore::from_url("redis://127.0.0.1:6379").await?;
    /// store.ready().await?; // fail fast: no Redis, no server
    /// # Ok(()) }
    /// ```
    ///
    /// On Cluster a connection counts as connected once it reaches every primary, so one
    /// primary down fails the check.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] with what went wrong (refused, timed out, not connected, the server's
    /// error reply).
    pub async fn ready(&self) -> Result<(), Error> {
        let bound = self.command_timeout.unwrap_or(Duration::from_secs(1));
        for client in self.client.clients() {
            let pong = tokio::time::timeout(bound, client.ping::<fred::types::Value>(None));
            match pong.await {
                Ok(Ok(_)) if client.is_connected() => {}
                Ok(Ok(_)) => return Err(not_ready(ErrorKind::IO, "Redis is not connected yet")),
                Ok(Err(e)) => return Err(Error::store(e)),
                Err(_) => return Err(not_ready(ErrorKind::Timeout, "no answer to PING in time")),
            }
        }
        Ok(())
    }
}

fn not_ready(kind: ErrorKind, what: &'static str) -> Error {
    Error::store(fred::error::Error::new(kind, what))
}

/// The client a command goes through, every client of its store (see [`revive_after`]), and
/// their command timeout, if they have one.
#[derive(Clone, Copy)]
pub(super) struct Via<'a> {
    pub(super) client: &'a Client,
    pub(super) pool: &'a [Client],
    pub(super) limit: Option<Duration>,
}

impl<C: FredClient> RedisStore<C> {
    /// `client`, one of this store's, with the others and the command timeout.
    pub(super) fn via<'a>(&'a self, client: &'a Client) -> Via<'a> {
        Via {
            client,
            pool: self.client.clients(),
            limit: self.command_timeout,
        }
    }

    /// The error for a command through `client` (one of this store's) that failed with `e`
    /// (see [`failed`]).
    pub(super) fn failed(&self, client: &Client, e: fred::error::Error) -> Error {
        failed(self.via(client), e)
    }
}

/// When each client was last made to reconnect by [`revive_after`], by fred client id.
static REVIVED: LazyLock<Mutex<HashMap<String, Instant>>> = LazyLock::new(Mutex::default);

/// How long a connection asked by [`revive_after`] has to answer its `PING`.
const PROBE_LIMIT: Duration = Duration::from_secs(1);

/// After the error `e` of a command through `via`'s client: when the command timed out on a
/// connection fred still counts as connected, makes the client reconnect (at most once a
/// second), and asks each other connected client of its store for a `PING` (one through each of
/// its connections: to every primary on a Cluster), making any that does not answer within a
/// second reconnect too.
///
/// fred's unresponsive-connection check counts from a connection's *last* write, so under
/// steady traffic a connection to a server that hangs without closing it (`SIGSTOP`, a silent
/// partition) is never found unresponsive: new commands keep being written to it. A timed-out
/// command is the sign; a reconnect is the cure, and behind Sentinel it asks the sentinels for
/// the primary again, so a failover away from a hung primary is followed within about a second.
/// A connection no command went through meanwhile is not found by either: left alone, it would
/// fail its first command after the failover, so it is asked at once.
fn revive_after(Via { client, pool, .. }: Via<'_>, e: &fred::error::Error) {
    if *e.kind() != ErrorKind::Timeout || !client.is_connected() || !reconnect(client) {
        return;
    }
    for other in pool {
        if other.id() != client.id() && other.is_connected() {
            tokio::spawn(probe(other.clone()));
        }
    }
}

/// Sends `client` a `PING` (on a Cluster, one to each primary it knows), and makes it
/// reconnect if one of them gets no answer within [`PROBE_LIMIT`].
async fn probe(client: Client) {
    let primaries = match client.cached_cluster_state() {
        Some(state) => state.unique_primary_nodes(),
        None => Vec::new(),
    };
    let answered = if primaries.is_empty() {
        answers(client.ping(None)).await
    } else {
        let pings = primaries.into_iter().map(|node| {
            let client = client.clone();
            answers(async move { client.with_cluster_node(node).ping(None).await })
        });
        futures_util::future::join_all(pings)
            .await
            .into_iter()
            .all(|ok| ok)
    };
    if !answered {
        reconnect(&client);
    }
}

/// Whether `ping` is answered within [`PROBE_LIMIT`] (an error other than a timeout counts:
/// the connection is not silent, and fred handles a closed one itself).
async fn answers(
    ping: impl Future<Output = Result<fred::types::Value, fred::error::Error>>,
) -> bool {
    match tokio::time::timeout(PROBE_LIMIT, ping).await {
        Ok(Err(e)) => *e.kind() != ErrorKind::Timeout,
        Ok(Ok(_)) => true,
        Err(_) => false,
    }
}

/// Makes `client` reconnect, unless it was made to within the last second: whether it was.
fn reconnect(client: &Client) -> bool {
    let now = Instant::now();
    {
        let mut revived = REVIVED.lock().unwrap_or_else(|e| e.into_inner());
        match revived.get(client.id()) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(1) => return false,
            _ => revived.insert(client.id().to_owned(), now),
        };
    }
    tracing::warn!(
        client = client.id(),
        "a Redis connection did not answer in time: reconnecting"
    );
    let client = client.clone();
    tokio::spawn(async move {
        let _ = client.force_reconnection().await;
    });
    true
}

/// The error for a command through `via`'s client that failed with `e`: [`Error::Timeout`] when
/// it timed out and the client has a command timeout, else [`Error::Store`]. A timeout also
/// makes the client reconnect, and checks the store's other clients ([`revive_after`]).
pub(super) fn failed(via: Via<'_>, e: fred::error::Error) -> Error {
    failed_as(via, e, Error::store)
}

/// [`failed`], with any error but a timeout mapped by `otherwise` (a script's own errors).
pub(super) fn failed_as(
    via: Via<'_>,
    e: fred::error::Error,
    otherwise: impl FnOnce(fred::error::Error) -> Error,
) -> Error {
    revive_after(via, &e);
    match (e.kind(), via.limit) {
        (ErrorKind::Timeout, Some(limit)) => Error::Timeout(limit),
        _ => otherwise(e),
    }
}

/// A stable hash of the last 8 bytes of `key`: session ids are random, so their tail spreads
/// them evenly (over a pool's clients, or the local cache's stripes).
pub(super) fn tail_hash(key: &[u8]) -> usize {
    let tail = &key[key.len().saturating_sub(8)..];
    tail.iter().fold(0_usize, |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    })
}

impl RedisStore<Pool> {
    /// The default key prefix, as in SCS's redisstore: `scs:session:`.
    pub const DEFAULT_PREFIX: &'static str = "scs:session:";

    /// A store on the Redis at `url` (any URL fred accepts: `redis://`, `rediss://` with the
    /// `tls` feature, `redis-cluster://host:port?node=host:port`, `redis-sentinel://…`; a
    /// username and password as in `redis://user:password@host:port`), with settings fit for
    /// a session store:
    ///
    /// - it dials lazily, like SCS over redigo: it returns at once, without waiting for Redis,
    ///   and connects in the background, so a server restarted during a Redis outage still comes
    ///   up. Until Redis answers, requests that use their session get the layer's error response
    ///   within the command timeout, and the others are served; full service begins by itself.
    ///   To fail fast at start-up instead, call [`ready`](RedisStore::ready) and stop on its
    ///   error;
    ///
    /// - a pool of 4 connections (each session key always uses the same one, so Redis runs one
    ///   session's commands in order);
    /// - reconnect forever, every 100 ms, so service resumes by itself after a Redis restart or
    ///   a failover;
    /// - a 1 s connection timeout, a 900 ms command timeout (below the layer's default 1 s store
    ///   timeout, so a command is dropped rather than sent after its request has failed), and
    ///   connections that stay silent for 1 s are reconnected;
    /// - up to 3 attempts and 2 redirections per command, so Cluster `MOVED`/`ASK` redirects
    ///   during resharding and failover are followed.
    ///
    /// If you lower the layer's `store_timeout` below 900 ms, build your own pool with a command
    /// timeout below it.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the URL is invalid; an unreachable Redis is not an error here (see
    /// [`ready`](RedisStore::ready)).
    pub async fn from_url(url: &str) -> Result<Self, Error> {
        let config = Config::from_url(url).map_err(Error::store)?;
        Self::from_config(config).await
    }

    /// Like [`from_url`](Self::from_url), with fred's [`Config`] built by the caller: the same
    /// pool and settings, on a server, credentials and TLS of your choice. The way to reach a
    /// Redis whose certificate is signed by your own CA, or that wants a client certificate.
    ///
    /// # TLS
    ///
    /// With the `tls` feature (fred's rustls support, `ring` provider), a `rediss://` URL given
    /// to [`from_url`](Self::from_url) trusts the system's root certificates. For a private CA,
    /// or mutual TLS, set the config's `tls` field to a rustls `ClientConfig` of your own (fred
    /// re-exports rustls as `tower_scs::fred::rustls`):
    ///
    /// ```no_run
    /// # #[cfg(feature = "tls")]
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_scs::fred::prelude::Config;
    /// use tower_scs::fred::rustls::{ClientConfig, RootCertStore};
    /// use tower_scs::fred::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    /// use tower_scs::fred::types::config::TlsConnector;
    /// use tower_scs::RedisStore;
    ///
    /// // Trust only the CA that signed the server's certificate.
    /// let mut roots = RootCertStore::empty();
    /// for cert in CertificateDer::pem_file_iter("/etc/redis/ca.pem")? {
    ///     roots.add(cert?)?;
    /// }
    /// let tls = ClientConfig::builder().with_root_certificates(roots);
    /// // Without a client certificate: `tls.with_no_client_auth()`. With one (mutual TLS,
    /// // redis-server's `--tls-auth-clients yes`):
    /// let chain: Vec<_> =
    ///     CertificateDer::pem_file_iter("/etc/redis/client.pem")?.collect::<Result<_, _>>()?;
    /// let key = PrivateKeyDer::from_pem_file("/etc/redis/client.key")?;
    /// let tls = tls.with_client_auth_cert(chain, key)?;
    ///
    /// let mut config = Config::from_url("rediss://sessions:secret@redis.internal:6380")?;
    /// config.tls = Some(TlsConnector::from(tls).into());
    /// let store = RedisStore::from_config(config).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The certificate is checked against the host name (or IP address) in the config; in a
    /// Cluster whose nodes announce IP addresses, fred's `TlsConfig::hostnames` maps them to
    /// the names on the certificates. A [`LocalCache`](crate::LocalCache)'s own subscriber
    /// connection uses the same rustls settings (it needs fred's rustls connector, not
    /// native-tls).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the pool cannot be built; like `from_url`, it dials lazily, and an
    /// unreachable Redis is not an error here (see [`ready`](RedisStore::ready)).
    pub async fn from_config(mut config: Config) -> Result<Self, Error> {
        // The first connection follows the reconnect policy too, instead of failing `init`.
        config.fail_fast = false;
        let pool = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(1);
                c.internal_command_timeout = Duration::from_secs(1);
                // fred 10.1 counts following a MOVED or ASK redirect as another attempt: with a
                // single attempt a redirected command always fails, and an ASK (live resharding)
                // ends the client's router task for good. Fewer redirections than attempts make
                // fred fail the command, not its router, when an ASK loops.
                c.max_command_attempts = 3;
                c.max_redirections = 2;
                // A connection with no reply for 1 s since its last write is closed and
                // reconnected.
                c.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(Duration::from_secs(1)),
                    interval: Duration::from_millis(250),
                };
            })
            // Below the layer's default 1 s store timeout, so that fred's own timeout fires first
            // and fred drops the command instead of sending or resending it after the request
            // has already failed.
            .with_performance_config(|p| p.default_command_timeout = Duration::from_millis(900))
            .set_policy(ReconnectPolicy::new_constant(0, 100))
            .build_pool(4)
            .map_err(Error::store)?;
        // The connection tasks run detached; commands sent before they connect wait for them,
        // within the command timeout.
        drop(pool.connect_pool());
        Ok(Self::new(pool))
    }
}
