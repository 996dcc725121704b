//! The bench's child processes: [`Proc`], a child that exits when the bench lets go of it, the
//! way the bench starts one (this binary re-executed, announcing itself on its first line), and
//! `--guard`, the process that keeps Redis from outliving the bench.

use std::{
    env,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    process::{Child, Command, Stdio},
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::Result;

/// A child process of the bench: a server, or the guard of the Redis server. Dropping it closes
/// its stdin, which makes it exit (a server) or stop Redis and exit (the guard); a child still
/// running 3 s later is killed.
pub struct Proc {
    child: Child,
    name: String,
}

impl Proc {
    /// Runs this binary again with `args`, stdin a pipe from the bench and stderr the bench's,
    /// and reads the first line it prints: the value after `prefix` (`READY `, `PID `), if that
    /// line has one.
    pub fn spawn_self<T: FromStr>(
        name: String,
        args: &[&str],
        prefix: &str,
    ) -> Result<(Proc, Option<T>)> {
        let mut child = Command::new(env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let proc = Proc { child, name };
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let value = line
            .trim()
            .strip_prefix(prefix)
            .and_then(|v| v.parse().ok());
        Ok((proc, value))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the child has exited.
    pub fn exited(&mut self) -> Result<bool> {
        Ok(self.child.try_wait()?.is_some())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Err(e) = self.child.kill() {
            eprintln!("could not kill {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `--guard <redis-server command…>`: runs Redis as a child, prints `PID <pid>`, and stops it
/// when stdin closes, so that Redis never outlives the bench, however the bench ends (its stdin
/// is a pipe from the bench). If Redis exits by itself, its output is printed to stderr.
pub fn guard(command: &[String]) -> Result<()> {
    let (bin, args) = command.split_first().ok_or("--guard needs a command")?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let output = collect_output(&mut child);
    println!("PID {}", child.id());
    std::io::stdout().flush()?;
    let closed = Arc::new(AtomicBool::new(false));
    {
        let closed = closed.clone();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            closed.store(true, Ordering::Release);
        });
    }
    loop {
        if closed.load(Ordering::Acquire) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            std::thread::sleep(Duration::from_millis(50)); // let the readers finish
            let out = output.lock().unwrap_or_else(|e| e.into_inner());
            return Err(format!("{bin} exited ({status}):\n{}", out.trim_end()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first 64 KiB of the child's stdout and stderr, lines as they come, read by threads.
fn collect_output(child: &mut Child) -> Arc<Mutex<String>> {
    let output = Arc::new(Mutex::new(String::new()));
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let output = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(|l| l.ok()) {
                let mut out = output.lock().unwrap_or_else(|e| e.into_inner());
                if out.len() < 64 * 1024 {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
        });
    }
    output
}
