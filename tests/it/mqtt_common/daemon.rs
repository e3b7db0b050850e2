//! The real `dosetrack` binary as a separate process, for the end-to-end
//! tests: [`DaemonProcess`] spawns `dosetrack <args>` (the same arguments
//! and environment at every start, so a restart finds the same database),
//! logs each run's stderr to its own file, and stops it with SIGKILL or
//! SIGTERM; [`NotifySocket`] is a simulated systemd `NOTIFY_SOCKET` that
//! records every line the daemon sends, with its time.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much of the log a panic message shows.
const LOG_TAIL: usize = 16_000;

/// Write a config file at `path` with only an `[http]` listener on a free
/// loopback port; that port.
pub(crate) fn write_http_config(path: &Path) -> u16 {
    let port = super::free_port();
    std::fs::write(path, format!("[http]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    port
}

/// The daemon binary, `args` on its command line (`run …`). Killed on drop.
pub(crate) struct DaemonProcess {
    args: Vec<String>,
    /// Set (`Some`) or removed (`None`) in the daemon's environment.
    env: BTreeMap<String, Option<String>>,
    log_dir: PathBuf,
    runs: u32,
    child: Option<Child>,
}

impl DaemonProcess {
    /// Not started yet; `RUST_LOG=info` unless [`env`](Self::env) or
    /// [`env_remove`](Self::env_remove) says otherwise. Run N logs to
    /// `log_dir/daemon-N.log`.
    pub(crate) fn new<S: Into<String>>(args: impl IntoIterator<Item = S>, log_dir: &Path) -> Self {
        let mut env = BTreeMap::new();
        env.insert("RUST_LOG".to_owned(), Some("info".to_owned()));
        DaemonProcess {
            args: args.into_iter().map(Into::into).collect(),
            env,
            log_dir: log_dir.to_owned(),
            runs: 0,
            child: None,
        }
    }

    /// `dosetrack run --broker mqtt://{host}:{port} --database {db}
    /// --topic-prefix {prefix} --client-id {client_id}`, plus `extra`.
    pub(crate) fn run(
        broker: (&str, u16),
        db: &Path,
        prefix: &str,
        client_id: &str,
        extra: &[&str],
        log_dir: &Path,
    ) -> Self {
        let mut args = vec![
            "run".to_owned(),
            "--broker".to_owned(),
            format!("mqtt://{}:{}", broker.0, broker.1),
            "--database".to_owned(),
            db.to_str().unwrap().to_owned(),
            "--topic-prefix".to_owned(),
            prefix.to_owned(),
            "--client-id".to_owned(),
            client_id.to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        DaemonProcess::new(args, log_dir)
    }

    /// Set `key` in the daemon's environment (every start).
    pub(crate) fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        let value = value.as_ref().to_str().unwrap().to_owned();
        self.env.insert(key.to_owned(), Some(value));
        self
    }

    /// Remove `key` from the daemon's environment (every start).
    pub(crate) fn env_remove(mut self, key: &str) -> Self {
        self.env.insert(key.to_owned(), None);
        self
    }

    /// Start a new run (the previous one must have ended: killed, waited
    /// for, or exited by itself).
    pub(crate) fn spawn(&mut self) {
        self.spawn_with_env(&[]);
    }

    /// Start a new run with `extra` set in its environment, for this run
    /// only (a failpoint, say).
    pub(crate) fn spawn_with_env(&mut self, extra: &[(&str, &str)]) {
        assert!(!self.running(), "the daemon is already running");
        self.runs += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dosetrack"));
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    /// How many times it was started.
    pub(crate) fn runs(&self) -> u32 {
        self.runs
    }

    /// A run was started and not yet waited for (by [`kill9`](Self::kill9),
    /// [`wait_exit`](Self::wait_exit) or a terminate).
    pub(crate) fn spawned(&self) -> bool {
        self.child.is_some()
    }

    /// The running process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    /// SIGKILL and wait (nothing when it does not run).
    pub(crate) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -{sig}` (`"HUP"`, `"TERM"`); the signal must be delivered.
    pub(crate) fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Started and not ended.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// Wait for the process to end by itself (a signal sent, a failpoint's
    /// abort); past `timeout`, kill it and panic with the log.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("the daemon was started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "the daemon did not exit within {timeout:?}; log:\n{}",
                    self.log_tail(LOG_TAIL)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait up to 60 s for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        self.terminate_within(Duration::from_secs(60))
    }

    /// SIGTERM and wait up to `timeout` for the exit (else kill and panic
    /// with the log). A run that has already ended gives its status.
    pub(crate) fn terminate_within(&mut self, timeout: Duration) -> ExitStatus {
        if self.running() {
            let pid = self.pid().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        }
        self.wait_exit(timeout)
    }

    /// The current (latest) run's log file.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.log_dir.join(format!("daemon-{}.log", self.runs))
    }

    /// The current run's log.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `bytes` of the current run's log (whole characters).
    pub(crate) fn log_tail(&self, bytes: usize) -> String {
        let text = self.log_text();
        let mut start = text.len().saturating_sub(bytes);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        text[start..].to_owned()
    }

    /// Wait for a line of the current run's log containing `what`, and
    /// return it; panic (with the log) when the daemon exits first or
    /// `timeout` passes.
    pub(crate) fn wait_log(&mut self, what: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let ended = !self.running();
            if let Some(l) = self.log_text().lines().find(|l| l.contains(what)) {
                return l.to_owned();
            }
            assert!(
                !ended,
                "the daemon exited before logging {what:?}; log:\n{}",
                self.log_tail(LOG_TAIL)
            );
            assert!(
                Instant::now() < deadline,
                "no {what:?} in the daemon log within {timeout:?}; log:\n{}",
                self.log_tail(LOG_TAIL)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A simulated systemd notify socket, `notify.sock` in a directory: every
/// line received (`READY=1`, `STATUS=…`, `WATCHDOG=1`), with its time.
pub(crate) struct NotifySocket {
    pub path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl NotifySocket {
    pub(crate) fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let now = Instant::now();
                let mut g = sink.lock().unwrap();
                for line in text.lines() {
                    g.push((now, line.to_owned()));
                }
            }
        });
        NotifySocket { path, got }
    }

    /// Every line so far, with the time it arrived.
    pub(crate) fn lines(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// Every line so far.
    pub(crate) fn texts(&self) -> Vec<String> {
        self.lines().into_iter().map(|(_, l)| l).collect()
    }

    /// When `line` first arrived.
    pub(crate) fn first_at(&self, line: &str) -> Option<Instant> {
        self.lines()
            .into_iter()
            .find(|(_, l)| l == line)
            .map(|(t, _)| t)
    }

    /// Wait for a line matching `pred` and return it; panic (with every
    /// line) after `timeout`.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((_, l)) = self.lines().into_iter().find(|(_, l)| pred(l)) {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}; got {:#?}", self.texts());
    }

    /// Times of the `WATCHDOG=1` pings after `since`.
    pub(crate) fn pings_since(&self, since: Instant) -> Vec<Instant> {
        self.lines()
            .into_iter()
            .filter(|(t, l)| *t >= since && l == "WATCHDOG=1")
            .map(|(t, _)| t)
            .collect()
    }
}

/// `Deref` and `DerefMut` from a test's own wrapper to its
/// [`DaemonProcess`] field: `derefs_to_process!(Daemon, process);`.
#[allow(unused_macros)]
macro_rules! derefs_to_process {
    ($wrapper:ty, $field:ident) => {
        impl std::ops::Deref for $wrapper {
            type Target = $crate::mqtt_common::daemon::DaemonProcess;
            fn deref(&self) -> &Self::Target {
                &self.$field
            }
        }
        impl std::ops::DerefMut for $wrapper {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.$field
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use derefs_to_process;
