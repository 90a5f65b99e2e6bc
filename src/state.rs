//! Files netstrap writes: always whole, never torn. Each write goes to a temporary file in
//! the same directory, is flushed to disk, renamed over the target and the directory is
//! synced — so a reader (or a crash, kill -9 included) sees the old file or the new one,
//! nothing in between.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Replace `path` with `contents` atomically and durably.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", path.file_name().and_then(|n| n.to_str()).unwrap_or("netstrap")))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    // Readable by the co-located node's container user (tempfile creates 0600).
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

/// This process's hold on its state directory: `netstrap.lock` in it, locked (`flock`) for as
/// long as the process lives and holding its pid, so that a second instance pointed at the same
/// directory refuses to start instead of overwriting the first one's files.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it: a configuration error.
    #[error(
        "NETSTRAP_STATE_DIR {dir} is in use by another netstrap ({holder}): two instances writing one \
         directory overwrite each other's files; give each instance its own NETSTRAP_STATE_DIR"
    )]
    Held { dir: String, holder: String },
    /// The directory or the lock file cannot be created (read-only, full): the writes that
    /// follow fail too and say so in `/readyz`; this is not a reason to refuse.
    #[error("cannot lock NETSTRAP_STATE_DIR {dir}: {cause}")]
    Io { dir: String, cause: io::Error },
}

pub const LOCK_FILE: &str = "netstrap.lock";

/// Lock `dir` (created if missing) for this process.
pub fn lock(dir: &Path) -> Result<StateLock, LockError> {
    use std::io::{Read, Seek};
    let shown = dir.display().to_string();
    let io = |cause| LockError::Io { dir: shown.clone(), cause };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Not truncated on open: the file holds the current holder's pid until we hold the lock.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.take(64).read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "pid unknown".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(LockError::Held { dir: shown, holder });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Best effort: the lock is what counts, the pid is for the message.
    let _ =
        file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(StateLock { _file: file })
}
