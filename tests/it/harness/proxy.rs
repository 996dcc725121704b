//! A TCP fault proxy between the app and Redis, in the manner of Toxiproxy: it listens on a
//! free loopback port, forwards each connection to Redis, and applies the [`Fault`] in force
//! to the bytes as they pass; [`FaultProxy::reset`] resets every open connection (RST).
//!
//! Built here on tokio rather than with the `noxious` crate (Toxiproxy's Rust port): noxious
//! 1.0.4 dates from 2021, is built on tokio-util 0.6 and rand 0.8, and is meant to run as a
//! server driven over HTTP, where a test wants a proxy in-process that it switches directly.
//!
//! TCP never loses bytes on a connection that stays up, so neither does the proxy: a
//! blackhole holds the bytes (as a partitioned network does while TCP retransmits) and lets
//! them through when it heals.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{ReadHalf, WriteHalf},
    },
    sync::{mpsc, watch},
    task::JoinSet,
    time::Instant,
};

/// What the proxy does to the bytes passing through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: bytes pass as they come.
    None,
    /// Each chunk Redis sends back arrives this much later (the order kept): every reply is
    /// late by it.
    Latency(Duration),
    /// Nothing passes either way; connections stay open and new ones are accepted. The bytes
    /// wait, and pass when the fault is lifted.
    Blackhole,
    /// The bytes, both ways, go out in slices of at most this many bytes, each in a write of
    /// its own, 1 ms apart: every reply and command reaches the other side in pieces.
    Slices(usize),
    /// When Redis closes a connection, the app's side stays open this long before it closes.
    SlowClose(Duration),
}

/// Which way bytes go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// App to Redis.
    Up,
    /// Redis to app.
    Down,
}

/// The proxy; it stops, and drops its connections, on drop.
pub struct FaultProxy {
    port: u16,
    fault: watch::Sender<Fault>,
    resets: watch::Sender<u64>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy to the Redis on `upstream` (loopback), passing bytes unchanged until told
    /// otherwise.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let (fault, faults) = watch::channel(Fault::None);
        let (resets, reset) = watch::channel(0_u64);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((app, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                let (faults, reset) = (faults.clone(), reset.clone());
                connections.spawn(connection(app, upstream, faults, reset));
                while connections.try_join_next().is_some() {}
            }
        });
        FaultProxy {
            port,
            fault,
            resets,
            accepted,
            task,
        }
    }

    /// How many connections the proxy has accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// `redis://127.0.0.1:<the proxy's port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Puts `fault` in force, from the next bytes on.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Resets every connection open now (both sides get an RST); new ones work as before.
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One proxied connection, until either side closes it or a reset.
async fn connection(
    mut app: TcpStream,
    upstream: u16,
    faults: watch::Receiver<Fault>,
    mut reset: watch::Receiver<u64>,
) {
    reset.mark_unchanged();
    let Ok(mut redis) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = (app.set_nodelay(true), redis.set_nodelay(true));
    let reset_now = {
        let (app_read, app_write) = app.split();
        let (redis_read, redis_write) = redis.split();
        let up = pump(app_read, redis_write, Way::Up, &faults);
        let down = pump(redis_read, app_write, Way::Down, &faults);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = reset.changed() => true,
        }
    };
    if reset_now {
        // Linger 0: closing sends an RST, not a FIN.
        let _ = (app.set_zero_linger(), redis.set_zero_linger());
    }
}

/// A chunk read from one side, when it is due on the other; `None`: the side closed.
type Chunk = (Instant, Option<Vec<u8>>);

/// Forwards bytes `from` one side `to` the other, going `way`, applying the fault in force.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    way: Way,
    faults: &watch::Receiver<Fault>,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<Chunk>();
    let read = async {
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let delay = match (*faults.borrow(), way) {
                (Fault::Latency(d), Way::Down) => d,
                _ => Duration::ZERO,
            };
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            if chunks.send((Instant::now() + delay, chunk)).is_err() || n == 0 {
                return;
            }
        }
    };
    let write = async {
        let mut faults = faults.clone();
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = faults.wait_for(|f| *f != Fault::Blackhole).await;
            let fault = *faults.borrow();
            let Some(bytes) = chunk else {
                if let (Fault::SlowClose(d), Way::Down) = (fault, way) {
                    tokio::time::sleep(d).await;
                }
                let _ = to.shutdown().await;
                return;
            };
            if send(&mut to, &bytes, fault).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}

/// Writes `bytes`, in slices if `fault` says so.
async fn send(to: &mut WriteHalf<'_>, bytes: &[u8], fault: Fault) -> std::io::Result<()> {
    let Fault::Slices(size) = fault else {
        return to.write_all(bytes).await;
    };
    for slice in bytes.chunks(size) {
        to.write_all(slice).await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
