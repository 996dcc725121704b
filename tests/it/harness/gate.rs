//! Gates, to order a request of the test app against the test: a handler given `gate=<name>`
//! stops at that gate, which the test sees ([`Gate::arrived`]), and goes on once the test opens
//! it ([`Gate::open`]). This is how a test knows that a slow request has loaded its session (or
//! is in its handler) before it sends another, and decides when the slow one commits.

use std::{
    collections::HashMap,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

/// How long a gate waits for what it waits for before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// The gates of the tests running in this process, by name.
static GATES: LazyLock<Mutex<HashMap<String, Arc<State>>>> = LazyLock::new(Mutex::default);

static NAMES: AtomicU64 = AtomicU64::new(0);

struct State {
    /// How many requests have stopped at the gate.
    arrived: watch::Sender<usize>,
    open: watch::Sender<bool>,
}

/// A gate of the test app, closed until opened; removed (and opened) on drop.
pub struct Gate {
    name: String,
    state: Arc<State>,
}

impl Gate {
    pub fn new() -> Self {
        let name = format!("gate{}", NAMES.fetch_add(1, Ordering::Relaxed));
        let state = Arc::new(State {
            arrived: watch::Sender::new(0),
            open: watch::Sender::new(false),
        });
        GATES.lock().unwrap().insert(name.clone(), state.clone());
        Gate { name, state }
    }

    /// The name a request passes as `gate=<name>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until `n` requests have stopped at the gate.
    pub async fn arrived(&self, n: usize) {
        let mut arrived = self.state.arrived.subscribe();
        tokio::time::timeout(PATIENCE, arrived.wait_for(|&a| a >= n))
            .await
            .unwrap_or_else(|_| {
                let a = *self.state.arrived.borrow();
                panic!("{} of {n} requests at {} within {PATIENCE:?}", a, self.name)
            })
            .expect("the gate exists");
    }

    /// Lets the requests at the gate, and any that come later, go on.
    pub fn open(&self) {
        self.state.open.send_replace(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
        GATES.lock().unwrap().remove(&self.name);
    }
}

/// Stops at the gate `name` until it is open (called by a handler).
pub async fn pass(name: &str) {
    let state = GATES
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no gate {name}"));
    state.arrived.send_modify(|a| *a += 1);
    let mut open = state.open.subscribe();
    tokio::time::timeout(PATIENCE, open.wait_for(|&o| o))
        .await
        .unwrap_or_else(|_| panic!("{name} not opened within {PATIENCE:?}"))
        .expect("the gate exists");
}
