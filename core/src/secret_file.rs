//! Creating files that hold key material: owner-only permissions from the first byte on.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `path` with `contents`, readable and writable by the owner only (mode 0600 on Unix).
///
/// Fails with [`io::ErrorKind::AlreadyExists`] when the file exists: `create_new` makes the
/// check and the creation one step, so two processes starting together cannot both write a key,
/// and an existing key is never overwritten. The mode is given to `open` rather than set
/// afterwards, so the key is never readable by others, not even for a moment. A file left
/// half-written by a failed write is removed, so the next start does not read a truncated key.
pub(crate) fn create_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        // Best effort: the write error is the one worth reporting.
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}
