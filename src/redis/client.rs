//! The fred clients a [`RedisStore`] sends through ([`FredClient`], sealed), and
//! [`RedisStore::from_url`]'s ready-made pool.

use std::time::Duration;

use fred::{
    clients::{Client, Pool},
    interfaces::ClientLike,
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

    /// The client the commands on `key` go through: always the same one for a key, so that
    /// Redis runs the commands on one session in the order they were sent, and a command whose
    /// caller gave up (store timeout) can never land after a later one.
    fn client_for(&self, key: &str) -> &Client {
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

    fn client_for(&self, key: &str) -> &Client {
        // Session ids are random, so the last few bytes of the key spread keys evenly; any stable
        // choice keeps one key's commands in order.
        let clients = self.clients();
        &clients[tail_hash(key) % clients.len()]
    }
}

/// A stable hash of the last 8 bytes of `key`: session ids are random, so their tail spreads
/// them evenly (over a pool's clients, or the local cache's stripes).
pub(super) fn tail_hash(key: &str) -> usize {
    let tail = &key.as_bytes()[key.len().saturating_sub(8)..];
    tail.iter().fold(0_usize, |h, &b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    })
}

impl RedisStore<Pool> {
    /// The default key prefix, as in SCS's redisstore: `scs:session:`.
    pub const DEFAULT_PREFIX: &'static str = "scs:session:";

    /// Connects to the Redis at `url` (any URL fred accepts: `redis://`, `rediss://` with the
    /// `tls` feature, `redis-cluster://host:port?node=host:port`, `redis-sentinel://…`) with
    /// settings fit for a session store:
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
    /// [`Error::Store`] when the URL is invalid or Redis cannot be reached at start.
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
    /// [`Error::Store`] when the pool cannot be built or Redis cannot be reached at start.
    pub async fn from_config(config: Config) -> Result<Self, Error> {
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
        pool.init().await.map_err(Error::store)?;
        Ok(Self::new(pool))
    }
}
