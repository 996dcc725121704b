//! A real browser for the tests: Debian's chromedriver, started on a free port, driving
//! headless Chromium through WebDriver (fantoccini), and the test app served on loopback TCP.
//!
//! Each browser runs on a profile directory the test owns, so that closing the browser and
//! opening another one on the same profile is a browser restart: what Chromium wrote to disk
//! (persistent cookies) is there again, what it kept in memory (session cookies) is gone.
//! Chromedriver runs in a process group of its own, with every Chromium it starts; dropping the
//! [`Chromedriver`] kills that group and removes the profiles.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::Router;
use cookie::Cookie;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    net::TcpListener,
    process::{Child, Command},
    sync::mpsc,
    task::JoinHandle,
};

use super::redis::free_port;

/// The Chromium binary chromedriver starts (Debian's `chromium` package).
const CHROMIUM: &str = "/usr/bin/chromium";
/// How to get both binaries, for the failure messages.
const INSTALL: &str = "apt-get install chromium chromium-driver";
/// What chromedriver prints once it listens.
const STARTED: &str = "started successfully";
/// How long a start, a page or a browser's exit may take before the test fails.
const WITHIN: Duration = Duration::from_secs(20);
/// How often a wait polls (a browser's exit, an element).
const POLL: Duration = Duration::from_millis(20);

/// A chromedriver process on `127.0.0.1:<port>`; on drop it is killed with every browser it
/// started, and the profiles made with [`Chromedriver::profile`] are removed.
pub struct Chromedriver {
    child: Child,
    port: u16,
    output: Arc<Mutex<String>>,
    profiles: Mutex<Vec<PathBuf>>,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits for its "started successfully" line; a
    /// start that lost its port to another process is retried on another one. Panics, naming
    /// the packages, when chromedriver or Chromium is not installed.
    pub async fn start() -> Self {
        let mut failed = String::new();
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: the browser tests need Chromium ({INSTALL})"
        );
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own group, which its browsers join: one kill ends them all.
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run chromedriver ({e}): the browser tests need it ({INSTALL})")
                });
            let output = Arc::<Mutex<String>>::default();
            let (started, mut seen) = mpsc::unbounded_channel();
            drain(child.stdout.take().unwrap(), output.clone(), Some(started));
            drain(child.stderr.take().unwrap(), output.clone(), None);
            let driver = Chromedriver {
                child,
                port,
                output,
                profiles: Mutex::default(),
            };
            match tokio::time::timeout(WITHIN, seen.recv()).await {
                Ok(Some(())) => return driver,
                // Its output ended first: it exited, most likely because the port was taken.
                Ok(None) => failed = format!("{driver:?}"),
                Err(_) => panic!("chromedriver did not start within {WITHIN:?}\n{driver:?}"),
            }
        }
        panic!("chromedriver exited before it started, 5 times; the last:\n{failed}");
    }

    /// A new, empty profile directory, removed when the driver is dropped.
    pub fn profile(&self) -> PathBuf {
        let mut profiles = self.profiles.lock().unwrap();
        let dir = std::env::temp_dir().join(format!(
            "tower-scs-chromium-{}-{}-{}",
            std::process::id(),
            self.port,
            profiles.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the browser profile");
        profiles.push(dir.clone());
        dir
    }

    /// Opens a headless Chromium on `profile` (a new WebDriver session).
    pub async fn open(&self, profile: &Path) -> Browser {
        self.open_with(profile, &[]).await
    }

    /// [`Chromedriver::open`], with more Chromium switches.
    pub async fn open_with(&self, profile: &Path, switches: &[&str]) -> Browser {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            // No desktop keyring to ask for the key that encrypts the cookie database.
            "--password-store=basic".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(switches.iter().map(|s| s.to_string()));
        let capabilities = json!({"goog:chromeOptions": {"binary": CHROMIUM, "args": args}});
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("a WebDriver session: {e}\n{self:?}"));
        let pid = browser_pid(profile);
        Browser {
            client,
            pid,
            profile: profile.to_owned(),
        }
    }
}

impl std::fmt::Debug for Chromedriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let output = self.output.lock().unwrap();
        write!(f, "--- chromedriver on port {} ---\n{output}", self.port)
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(group) = self.child.id() {
            // The group's id is chromedriver's pid: this kills the driver and its browsers.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.start_kill();
        for dir in self.profiles.lock().unwrap().drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Copies a stream of chromedriver's into `into`, line by line; the first line saying it
/// started is reported on `started`, which is dropped (closed) when the stream ends.
fn drain(
    stream: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
    mut started: Option<mpsc::UnboundedSender<()>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(STARTED) {
                if let Some(started) = started.take() {
                    let _ = started.send(());
                }
            }
            let mut into = into.lock().unwrap();
            into.push_str(&line);
            into.push('\n');
        }
    });
}

/// The pid of the Chromium running on `profile`, from the `SingletonLock` it holds there (a
/// symbolic link to `<hostname>-<pid>`).
fn browser_pid(profile: &Path) -> u32 {
    let lock = profile.join("SingletonLock");
    let target = std::fs::read_link(&lock)
        .unwrap_or_else(|e| panic!("{}: {e} (is Chromium running?)", lock.display()));
    let target = target.to_string_lossy();
    let pid = target.rsplit_once('-').map(|(_, pid)| pid.parse());
    match pid {
        Some(Ok(pid)) => pid,
        _ => panic!("{} points to {target:?}, not <host>-<pid>", lock.display()),
    }
}

/// Whether the process `pid` is gone (or a zombie, which has exited but was not reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) state …`; the command name may itself hold parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// A headless Chromium, driven over WebDriver.
pub struct Browser {
    client: Client,
    pid: u32,
    profile: PathBuf,
}

impl Browser {
    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// The text the page shows.
    pub async fn text(&self) -> String {
        let body = self.client.find(Locator::Css("body")).await.expect("body");
        body.text().await.expect("the page's text")
    }

    /// Navigates to `url` and returns the text of the page it shows.
    pub async fn read(&self, url: &str) -> String {
        self.goto(url).await;
        self.text().await
    }

    /// Waits until the page shows the element `#id` (after a navigation the page started
    /// itself, such as a form it submits), and returns its text.
    pub async fn wait_text(&self, id: &str) -> String {
        let element = (self.client.wait())
            .at_most(WITHIN)
            .every(POLL)
            .for_element(Locator::Id(id))
            .await
            .unwrap_or_else(|e| panic!("#{id} never showed: {e}"));
        element.text().await.expect("the element's text")
    }

    /// Types `text` into the page's form field named `name`.
    pub async fn fill(&self, name: &str, text: &str) {
        let field = (self
            .client
            .find(Locator::Css(&format!(r#"[name="{name}"]"#)))
            .await)
            .unwrap_or_else(|e| panic!("no field {name:?}: {e}"));
        field.send_keys(text).await.expect("type into the field");
    }

    /// Clicks the element `css` (a checkbox, say), which must not leave the page.
    pub async fn click(&self, css: &str) {
        let element = (self.client.find(Locator::Css(css)).await)
            .unwrap_or_else(|e| panic!("no element {css:?}: {e}"));
        element.click().await.expect("click");
    }

    /// Clicks the element `css` (a form's button, a link) and waits until the page it leads
    /// to has loaded: this page marks itself first, and the wait ends on a loaded page
    /// without the mark.
    pub async fn click_to_leave(&self, css: &str) {
        self.execute("window.towerScsLeaving = true").await;
        self.click(css).await;
        let script = "return window.towerScsLeaving === undefined \
                      && document.readyState === 'complete'";
        let left = async {
            // While the old page unloads a script may fail: not there yet.
            while !matches!(
                self.client.execute(script, vec![]).await,
                Ok(Value::Bool(true))
            ) {
                tokio::time::sleep(POLL).await;
            }
        };
        (tokio::time::timeout(WITHIN, left).await)
            .unwrap_or_else(|_| panic!("clicking {css:?} led to no new page within {WITHIN:?}"));
    }

    /// The address of the page the browser shows.
    pub async fn url(&self) -> String {
        let url = self.client.current_url().await.expect("the current URL");
        url.to_string()
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn execute(&self, script: &str) -> Value {
        (self.client.execute(script, vec![]))
            .await
            .unwrap_or_else(|e| panic!("execute {script:?}: {e}"))
    }

    /// The browser's cookies for the current page (its cookie jar, HttpOnly ones included).
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.client.get_all_cookies().await.expect("get cookies")
    }

    /// The cookie `name` of the current page, if the browser has one.
    pub async fn cookie(&self, name: &str) -> Option<Cookie<'static>> {
        let cookies = self.cookies().await;
        cookies.into_iter().find(|c| c.name() == name)
    }

    /// Saves a screenshot of the page as `target/browser/<name>.png`, and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = target_dir().join("browser");
        std::fs::create_dir_all(&dir).expect("create target/browser");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Closes the browser (ends the WebDriver session) and waits until its process has
    /// exited, and exited cleanly: it removes its `SingletonLock` only on an orderly shutdown,
    /// the one that writes its cookies to disk.
    pub async fn quit(self) {
        self.client
            .close()
            .await
            .expect("end the WebDriver session");
        let exit = async {
            while !exited(self.pid) {
                tokio::time::sleep(POLL).await;
            }
        };
        (tokio::time::timeout(WITHIN, exit).await)
            .unwrap_or_else(|_| panic!("Chromium {} still runs {WITHIN:?} after close", self.pid));
        let lock = self.profile.join("SingletonLock");
        assert!(
            std::fs::symlink_metadata(&lock).is_err(),
            "Chromium {} exited without removing {}: not an orderly shutdown",
            self.pid,
            lock.display()
        );
    }
}

/// `target/`, two levels above the test executable (`target/<profile>/deps/it-…`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.ancestors().nth(3).expect("target directory").to_owned()
}

/// An app served over TCP on `127.0.0.1:<port>` (so also on `localhost:<port>`, another site
/// for the browser); stopped on drop.
pub struct Served {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Served {
    /// Serves `app` on a free loopback port.
    pub async fn start(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve the app");
        });
        Served { port, task }
    }

    /// `http://<host>:<port><path>`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}
