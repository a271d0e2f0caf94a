//! Files that hold key material: owner-only permissions from the first byte on, complete or
//! absent (never half-written), and refused when others can read them.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `path` with `contents`, readable and writable by the owner only (mode 0600 on Unix).
///
/// Fails with [`io::ErrorKind::AlreadyExists`] when the file exists; an existing key is never
/// overwritten. The contents go to a private temporary file first, which is then linked to
/// `path` in one step (`link` fails if `path` exists), so a process starting at the same moment
/// either finds no file or the whole file, never a truncated key.
pub fn create_new(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let options = private_new_file();
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()?;
        fs::hard_link(&tmp, path)
    });
    // Best effort: the link (or the write error) is what matters.
    let _ = fs::remove_file(&tmp);
    result
}

/// Writes `path` with `contents` (mode 0600), replacing it in one step if it exists: readers
/// see the old or the new file, never a mix (a renewed certificate, a rewritten state file).
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".new-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = fs::remove_file(&tmp);
    let options = private_new_file();
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a key file, refusing one that group or others may read or write (REG-4).
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} has mode {mode:o}: key files must be private to their owner (chmod 600)",
                    path.display()
                ),
            ));
        }
    }
    fs::read(path)
}

/// Options that create a new file readable and writable by the owner only.
fn private_new_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}
