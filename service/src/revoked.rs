//! Sessions ended by sign-out before their cookie expired (`/.gatehouse/logout`).
//!
//! A session cookie is sealed, not stored, so signing out can only clear the browser's copy;
//! a copy kept elsewhere would still open. Revoking the session's id closes that: every worker
//! refuses it at once, and so does the service after a restart (the list is a file in the state
//! directory). An entry lasts as long as the session could have, then goes.
//!
//! Workers check a revocation on every request with a session, so they keep their own copy of
//! the list and only look at a shared counter (one atomic load, no lock) to learn that it
//! changed; sign-outs, which are rare, take the lock.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The list of revoked sessions, shared by the workers.
#[derive(Debug)]
pub(crate) struct Revocations {
    path: PathBuf,
    /// Session id → the Unix second its session would have expired.
    entries: Mutex<HashMap<[u8; 16], u64>>,
    /// Counts changes, so that workers know when to copy the list again.
    generation: AtomicU64,
    /// Held while the file is written (not the list: workers copy it meanwhile).
    file: Mutex<()>,
}

impl Revocations {
    /// The list kept in `path`, without the entries that expired by `now`. A missing file is
    /// an empty list; lines that do not parse are left out.
    pub(crate) fn load(path: &Path, now: u64) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let entries = text
            .lines()
            .filter_map(|line| {
                let (id, expires) = line.split_once(' ')?;
                let id: [u8; 16] = gatehouse_core::hex::decode_array(id)?;
                let expires: u64 = expires.parse().ok()?;
                (expires > now).then_some((id, expires))
            })
            .collect();
        Revocations {
            path: path.to_owned(),
            entries: Mutex::new(entries),
            generation: AtomicU64::new(1),
            file: Mutex::new(()),
        }
    }

    /// Revokes session `id`, which would expire at `expires`; drops entries expired by `now`
    /// and writes the list. Workers see it at their next request.
    /// A session already revoked changes nothing (a cookie sent to the logout address again
    /// and again costs no write and makes no worker copy the list).
    pub(crate) fn revoke(&self, id: [u8; 16], expires: u64, now: u64) -> std::io::Result<()> {
        {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if expires <= now || entries.contains_key(&id) {
                return Ok(());
            }
            entries.retain(|_, &mut until| until > now);
            entries.insert(id, expires);
        }
        self.generation.fetch_add(1, Ordering::Release);
        // The file is written outside the list's lock, so workers never wait on the disk; one
        // writer at a time, each writing the list as it is then, so the last write holds all.
        let _writing = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let text = {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let mut text = String::with_capacity(entries.len() * 45);
            for (id, expires) in entries.iter() {
                text.push_str(&gatehouse_core::hex::encode(id));
                text.push(' ');
                text.push_str(&expires.to_string());
                text.push('\n');
            }
            text
        };
        gatehouse_core::secret_file::replace(&self.path, text.as_bytes())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn ids(&self) -> HashSet<[u8; 16]> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.keys().copied().collect()
    }
}

/// One worker's copy of the list.
#[derive(Default)]
pub(crate) struct RevokedCopy {
    copy: RefCell<(u64, HashSet<[u8; 16]>)>,
}

impl RevokedCopy {
    /// Whether session `id` was revoked (as of now: a change made by any worker is seen).
    pub(crate) fn contains(&self, shared: &Revocations, id: &[u8; 16]) -> bool {
        let generation = shared.generation();
        let mut copy = self.copy.borrow_mut();
        if copy.0 != generation {
            // Taken after reading the counter: a change made meanwhile bumps it again and is
            // copied at the next request.
            *copy = (generation, shared.ids());
        }
        copy.1.contains(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revocation is seen by another worker's copy at once and by a list loaded again
    /// from the file (a restart); entries whose session expired are dropped.
    #[test]
    fn revocations_reach_every_copy_and_survive_a_reload_until_expiry() {
        let dir = std::env::temp_dir().join(format!("gh-revoked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("revoked-sessions");
        let _ = std::fs::remove_file(&path);
        let list = Revocations::load(&path, 1000);
        let (a, b) = (RevokedCopy::default(), RevokedCopy::default());
        assert!(!a.contains(&list, &[1; 16]));
        list.revoke([1; 16], 2000, 1000).unwrap();
        list.revoke([2; 16], 1500, 1000).unwrap();
        assert!(a.contains(&list, &[1; 16]) && b.contains(&list, &[2; 16]));
        let generation = list.generation();
        list.revoke([1; 16], 2000, 1000).unwrap();
        assert_eq!(
            list.generation(),
            generation,
            "revoking again changes nothing"
        );
        assert!(!b.contains(&list, &[3; 16]));
        let reloaded = Revocations::load(&path, 1600);
        let c = RevokedCopy::default();
        assert!(c.contains(&reloaded, &[1; 16]));
        assert!(!c.contains(&reloaded, &[2; 16]), "its session has expired");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
