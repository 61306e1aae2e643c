//! The built `gatewarden` binary, run as a child process with its stderr read line by line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::WAIT;

pub const BIN: &str = env!("CARGO_BIN_EXE_gatewarden");

/// A running binary whose stderr lines arrive on a channel.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// With [`Proc::spawn_stalling`]: dropped with the `Proc`, which lets the reader go.
    _release: Option<mpsc::Sender<()>>,
}

/// The binary's command line, built (after linkerd2-proxy's test builders): what each test
/// sets, and nothing repeated.
#[derive(Default)]
pub struct Args {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Args {
    /// `--upstream`.
    pub fn upstream(self, upstream: &str) -> Args {
        self.args(&["--upstream", upstream])
    }

    /// `--token-file`.
    pub fn token_file(self, path: &str) -> Args {
        self.args(&["--token-file", path])
    }

    pub fn args(mut self, args: &[&str]) -> Args {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn envs(mut self, env: &[(&str, &str)]) -> Args {
        self.env
            .extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    pub fn spawn(self) -> Proc {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Proc::spawn(&args, &env)
    }
}

impl Proc {
    /// gatewarden listening on a port of the system's choosing in front of `upstream`.
    pub fn gatewarden(upstream: &str) -> Args {
        Args::default()
            .args(&["--listen", "127.0.0.1:0"])
            .upstream(upstream)
    }

    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_in(None, args, env)
    }

    /// Like [`Proc::spawn`], with `cwd` as the working directory (relative paths).
    pub fn spawn_in(cwd: Option<&std::path::Path>, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        Proc::start(cmd, args, env)
    }

    /// Like [`Proc::spawn`], as `uid`/`gid` with no supplementary groups (`setpriv` execs
    /// the binary: the child is gatewarden itself). Needs root.
    pub fn spawn_as(uid: u32, gid: u32, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start(as_user(uid, gid), args, env)
    }

    /// Like [`Proc::spawn`], but its stderr stops being read after the line that contains
    /// `stall_after`: a pipe nobody reads, held open (writes to it block) until the `Proc`
    /// is dropped.
    pub fn spawn_stalling(args: &[&str], env: &[(&str, &str)], stall_after: &str) -> Proc {
        let (release, held) = mpsc::channel::<()>();
        let mut p = Proc::start_with(
            Command::new(BIN),
            args,
            env,
            Some((stall_after.into(), held)),
        );
        p._release = Some(release);
        p
    }

    fn start(cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::start_with(cmd, args, env, None)
    }

    fn start_with(
        mut cmd: Command,
        args: &[&str],
        env: &[(&str, &str)],
        stall: Option<(String, mpsc::Receiver<()>)>,
    ) -> Proc {
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .env_remove("GATEWARDEN_CONFIG")
            .env_remove("OPENCLAW_CONFIG_PATH")
            .env_remove("OPENCLAW_STATE_DIR")
            .env_remove("OPENCLAW_HOME")
            // Tests run in parallel: no fixed admin port unless a test asks for one.
            .env("GATEWARDEN_ADMIN__LISTEN", "");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run gatewarden");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                let l = line.trim_end_matches('\n').to_string();
                line.clear();
                let stall_now = stall
                    .as_ref()
                    .is_some_and(|(after, _)| l.contains(after.as_str()));
                if tx.send(l).is_err() {
                    break;
                }
                if stall_now {
                    // Nobody reads from here on; the pipe stays open until the Proc goes.
                    let _ = stall.as_ref().map(|(_, held)| held.recv());
                    return;
                }
            }
        });
        Proc {
            child,
            lines,
            seen: Vec::new(),
            _release: None,
        }
    }

    /// Blocks until a stderr line contains `needle`.
    pub fn wait_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every stderr line read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    pub fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_line("[listen] listening");
        if line.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            return v["addr"].as_str().unwrap().parse().unwrap();
        }
        let addr = line
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        addr.parse().unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "gatewarden did not exit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it wrote to stderr, after it exited.
    pub fn rest(&mut self) -> String {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `setpriv … -- gatewarden`: the binary run as `uid`/`gid`, no supplementary groups.
pub fn as_user(uid: u32, gid: u32) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        "--",
        BIN,
    ]);
    cmd
}

/// Whether tests may switch users (root, with `setpriv`); tests of what another uid sees
/// need it, since root reads every file.
pub fn can_switch_users() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run_check(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("check")
        .args(args)
        .env_remove("GATEWARDEN_CONFIG")
        .env_remove("OPENCLAW_CONFIG_PATH")
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
