//! Tools the packaging tests run (kubectl, kubernetes-validate, checkov, the venv's python):
//! from the tools venv `.ci/run` builds, else from PATH; a missing one skips, or fails under
//! `CI=true` (`need!`, with `prereq`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A tool from the tools venv, else from PATH.
pub fn tool(name: &str) -> Result<PathBuf, String> {
    let venv = std::env::var_os("NETSTRAP_TOOLS_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/netstrap-ci/venv")));
    if let Some(p) = venv.map(|v| v.join("bin").join(name)).filter(|p| p.is_file()) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()))
        .ok_or_else(|| format!("{name} not found (bash .ci/run installs it)"))
}

/// Skip (or, under CI, fail) when a tool is missing.
#[macro_export]
macro_rules! need {
    ($tool:expr) => {
        match $tool {
            Ok(v) => v,
            Err(why) => {
                prereq::missing(&why);
                return;
            }
        }
    };
}

/// A command's stdout, or its output as the error when it fails.
pub fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| e.to_string())
}
