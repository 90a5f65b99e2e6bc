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
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("netstrap");
    write_all_atomic(dir, &[(name, contents)])
}

/// Replace each `dir/name` with its contents, each atomically, all durably: every temporary
/// file is flushed to disk (at once, on threads of their own: the journal commits them
/// together), then each is renamed over its target, then the directory is synced once. A crash
/// leaves each file old or new, never torn. This is on the way to readiness at start: one
/// directory sync instead of one per file, and the file syncs overlapped, halve its cost.
pub fn write_all_atomic(dir: &Path, files: &[(&str, &[u8])]) -> io::Result<()> {
    let mut temps = Vec::with_capacity(files.len());
    for (name, contents) in files {
        let mut tmp =
            tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
        // Readable by the co-located node's container user (tempfile creates 0600).
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
        tmp.write_all(contents)?;
        temps.push((tmp, dir.join(name)));
    }
    match temps.as_slice() {
        [] => return Ok(()),
        [(one, _)] => one.as_file().sync_all()?,
        many => std::thread::scope(|s| {
            let syncs: Vec<_> = many.iter().map(|(tmp, _)| s.spawn(|| tmp.as_file().sync_all())).collect();
            syncs
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("sync panicked"))))
        })?,
    }
    for (tmp, path) in temps {
        tmp.persist(path).map_err(|e| e.error)?;
    }
    // The renames are durable only once the directory entries are.
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn several_files_are_replaced_whole_readable_and_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.env"), "old a").unwrap();
        let kept = std::fs::metadata(dir.path().join("a.env")).unwrap().ino();
        write_all_atomic(dir.path(), &[("a.env", b"new a"), ("b.json", b"{}"), ("c.al", b"c")]).unwrap();
        for (name, body) in [("a.env", "new a"), ("b.json", "{}"), ("c.al", "c")] {
            let path = dir.path().join(name);
            assert_eq!(std::fs::read_to_string(&path).unwrap(), body, "{name}");
            // The co-located node runs as another user: it must be able to read them.
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644, "{name}");
        }
        // Replaced by a rename (a reader holding the old file keeps it whole), not rewritten.
        assert_ne!(std::fs::metadata(dir.path().join("a.env")).unwrap().ino(), kept);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "temporary files left behind: {names:?}");
        // Nothing to write is nothing done; a missing directory is an error, not a panic.
        write_all_atomic(dir.path(), &[]).unwrap();
        assert!(write_all_atomic(&dir.path().join("missing"), &[("x", b"x")]).is_err());
    }
}
