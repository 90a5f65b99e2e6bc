//! Running things inside the cluster's namespaces: commands, container processes, polling.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A process running in a pod (or the external client); killed when dropped.
pub struct Proc {
    pub(super) child: Child,
    pub(super) log: PathBuf,
}

impl Proc {
    /// Everything it wrote so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit code, once it has exited.
    pub fn exited(&mut self) -> Option<i32> {
        self.child.try_wait().ok().flatten().map(|s| s.code().unwrap_or(-1))
    }

    /// SIGTERM, then wait for the exit (20 s at most): the exit code and the log.
    pub fn stop(mut self) -> (i32, String) {
        let _ = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        let code = poll("the process to exit after SIGTERM", Duration::from_secs(20), || {
            self.exited().ok_or_else(|| self.log())
        });
        (code, self.log())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Call `f` every 50 ms until it gives a value; panic after `limit` with its last complaint.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Run a command to completion: its stdout, or what failed.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e} (install it: see .ci/run)", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// `ip -n <netns> <words>` (or `ip <words>` for an empty `netns`), which must succeed.
pub fn ip(netns: &str, words: &str) {
    let mut args = vec!["ip"];
    if !netns.is_empty() {
        args.extend(["-n", netns]);
    }
    args.extend(words.split_whitespace());
    run(&args).unwrap_or_else(|e| panic!("{e}"));
}

/// `args` in `netns` with its own UTS hostname (when given) and exactly `env` (plus `PATH`).
pub fn command(netns: &str, hostname: Option<&str>, env: &[(String, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns]);
    if let Some(h) = hostname {
        cmd.args(["unshare", "--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", h]);
    }
    cmd.args(["env", "-i"]);
    if !env.iter().any(|(k, _)| k == "PATH") {
        cmd.arg(format!("PATH={PATH_ENV}"));
    }
    cmd.args(env.iter().map(|(k, v)| format!("{k}={v}"))).args(args);
    cmd.stdin(Stdio::null());
    cmd
}
