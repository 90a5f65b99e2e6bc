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
