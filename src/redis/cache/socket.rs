//! Our own connection to one Redis server, subscribed to `__redis__:invalidate` (RESP2): read
//! without fred, so that a hit can take in, there and then, every invalidation that has reached
//! the socket. Redis writes an invalidation in the event-loop iteration of the write that causes
//! it, so by the time another process has had its reply and a request has come here, the
//! invalidation is in this socket's buffer: reading it on the hit leaves no window but Redis's
//! own write loop.

use std::{
    io::ErrorKind as IoErrorKind,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

use fred::{
    clients::Client,
    error::{Error as FredError, ErrorKind},
    interfaces::ClientLike,
    types::config::Server,
};
use redis_protocol::resp2::{
    decode::decode,
    encode::encode,
    types::{OwnedFrame, Resp2Frame},
};
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, net::TcpStream};

use super::tls::Tls;

/// The channel Redis publishes invalidations on, for connections that redirect to a subscriber.
const INVALIDATE_CHANNEL: &str = "__redis__:invalidate";
/// How much is read from the socket at a time.
pub(super) const CHUNK: usize = 16 * 1024;

/// A socket's read side: what has arrived, and the buffer it is read into.
#[derive(Debug)]
struct Inbox {
    pending: Vec<u8>,
    chunk: Box<[u8]>,
    /// The TLS session, when the store's connections use TLS: what is read is decrypted here.
    tls: Option<Tls>,
}

/// What one invalidation message says.
pub(super) enum Invalidated {
    /// These keys changed.
    Keys(Vec<Vec<u8>>),
    /// The database was flushed.
    Everything,
}

/// A subscribed connection.
#[derive(Debug)]
pub(super) struct Socket {
    /// For waiting until something arrives (the background reader).
    stream: TcpStream,
    /// The same socket, read with a plain non-blocking `read` on a hit: tokio's `try_read`
    /// does not look at the socket until its reactor has seen it readable, which can be later.
    now: std::net::TcpStream,
    /// Bytes read and not yet a whole frame, and the buffer reads go into; held while reading,
    /// so messages apply in order.
    inbox: Mutex<Inbox>,
    closed: AtomicBool,
    /// The connection's id (`CLIENT ID`): the data connections redirect to it.
    pub(super) id: i64,
}

impl Socket {
    /// Connects to `server` with `like`'s credentials and connection timeout, and subscribes.
    pub(super) async fn connect(like: &Client, server: &Server) -> Result<Socket, FredError> {
        let limit = like.connection_config().connection_timeout;
        let limit = if limit.is_zero() {
            Duration::from_secs(1)
        } else {
            limit
        };
        tokio::time::timeout(limit, Self::handshake(like, server))
            .await
            .map_err(|_| FredError::new(ErrorKind::Timeout, "the subscriber did not connect"))?
    }

    async fn handshake(like: &Client, server: &Server) -> Result<Socket, FredError> {
        let config = like.client_config();
        let mut stream = TcpStream::connect((&*server.host, server.port))
            .await
            .map_err(io)?;
        stream.set_nodelay(true).map_err(io)?;
        let mut tls = Tls::connect(&config, server, &mut stream).await?;
        let mut pending = Vec::new();
        if let Some(password) = &config.password {
            let mut auth = vec!["AUTH"];
            auth.extend(config.username.as_deref());
            auth.push(password);
            request(&mut stream, &mut tls, &mut pending, &auth).await?;
        }
        let id = match request(&mut stream, &mut tls, &mut pending, &["CLIENT", "ID"]).await? {
            OwnedFrame::Integer(id) => id,
            other => return Err(unexpected(&other)),
        };
        let subscribe = ["SUBSCRIBE", INVALIDATE_CHANNEL];
        request(&mut stream, &mut tls, &mut pending, &subscribe).await?;
        let std = stream.into_std().map_err(io)?;
        let now = std.try_clone().map_err(io)?;
        let stream = TcpStream::from_std(std).map_err(io)?;
        Ok(Socket {
            stream,
            now,
            inbox: Mutex::new(Inbox {
                pending,
                chunk: vec![0; CHUNK].into_boxed_slice(),
                tls,
            }),
            closed: AtomicBool::new(false),
            id,
        })
    }

    /// Waits until there is something to read (or the connection closed).
    pub(super) async fn readable(&self) {
        let _ = self.stream.readable().await;
    }

    /// Reads what has arrived and hands over every whole invalidation, in order; `false` once
    /// the connection is closed or broken (invalidations may then have been lost). `at_once`
    /// reads the socket itself; otherwise through tokio, which also resets its readiness.
    pub(super) fn drain(&self, at_once: bool, mut apply: impl FnMut(Invalidated)) -> bool {
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        // One buffer for the socket's lifetime: a hit reads (and mostly finds nothing) without
        // allocating or zeroing one.
        let Inbox {
            pending,
            chunk,
            tls,
        } = &mut *inbox;
        loop {
            let read = if at_once {
                std::io::Read::read(&mut &self.now, chunk)
            } else {
                self.stream.try_read(chunk)
            };
            match read {
                Ok(0) => self.closed.store(true, SeqCst),
                Ok(n) => {
                    let Some(tls) = tls else {
                        pending.extend_from_slice(&chunk[..n]);
                        continue;
                    };
                    if tls.take_in(&chunk[..n], pending).is_err() {
                        self.closed.store(true, SeqCst);
                        break;
                    }
                    continue;
                }
                Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
                Err(e) if e.kind() == IoErrorKind::Interrupted => continue,
                Err(_) => self.closed.store(true, SeqCst),
            }
            break;
        }
        while !pending.is_empty() {
            match decode(pending) {
                Ok(Some((frame, used))) => {
                    pending.drain(..used);
                    if let Some(invalidated) = invalidation(frame) {
                        apply(invalidated);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.closed.store(true, SeqCst);
                    break;
                }
            }
        }
        !self.closed.load(SeqCst)
    }
}

/// The invalidation a pubsub message carries, if it is one.
fn invalidation(frame: OwnedFrame) -> Option<Invalidated> {
    let OwnedFrame::Array(mut parts) = frame else {
        return None;
    };
    let payload = parts.pop()?;
    match parts.as_slice() {
        [
            OwnedFrame::BulkString(kind),
            OwnedFrame::BulkString(channel),
        ] if kind == b"message" && channel == INVALIDATE_CHANNEL.as_bytes() => {}
        _ => return None,
    }
    match payload {
        OwnedFrame::Null => Some(Invalidated::Everything),
        OwnedFrame::Array(keys) => Some(Invalidated::Keys(
            keys.into_iter()
                .filter_map(|k| match k {
                    OwnedFrame::BulkString(k) => Some(k),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

/// Sends one command during the handshake and reads its reply.
async fn request(
    stream: &mut TcpStream,
    tls: &mut Option<Tls>,
    pending: &mut Vec<u8>,
    args: &[&str],
) -> Result<OwnedFrame, FredError> {
    let frame = OwnedFrame::Array(
        args.iter()
            .map(|a| OwnedFrame::BulkString(a.as_bytes().to_vec()))
            .collect(),
    );
    let mut out = vec![0; frame.encode_len(false)];
    encode(&mut out, &frame, false)
        .map_err(|e| FredError::new(ErrorKind::Protocol, e.to_string()))?;
    match tls {
        None => stream.write_all(&out).await.map_err(io)?,
        Some(tls) => tls.send(stream, &out).await?,
    }
    loop {
        if let Some((reply, used)) =
            decode(pending).map_err(|e| FredError::new(ErrorKind::Protocol, e.to_string()))?
        {
            pending.drain(..used);
            return match reply {
                OwnedFrame::Error(e) => Err(FredError::new(ErrorKind::Auth, e)),
                reply => Ok(reply),
            };
        }
        let mut chunk = vec![0; CHUNK];
        match (stream.read(&mut chunk).await.map_err(io)?, &mut *tls) {
            (0, None) => return Err(FredError::new(ErrorKind::IO, "connection closed")),
            (n, None) => pending.extend_from_slice(&chunk[..n]),
            (n, Some(tls)) => tls.take_in(&chunk[..n], pending)?,
        }
    }
}

fn io(e: std::io::Error) -> FredError {
    FredError::new(ErrorKind::IO, e.to_string())
}

fn unexpected(frame: &OwnedFrame) -> FredError {
    FredError::new(ErrorKind::Protocol, format!("unexpected reply {frame:?}"))
}
