//! Syncing fjall's journal without holding its lock. `Database::persist` fsyncs while it
//! holds the journal writer's mutex, so every commit (status groups, accepts, folds)
//! would wait out every fsync. Instead the journal's buffer goes to the OS under the
//! lock (`PersistMode::Buffer`, quick), and the active journal file is fdatasync'd
//! through a handle of our own, with commits going on meanwhile.
//!
//! This relies on fjall 3.1's layout: journals are `<id>.jnl` in the data directory,
//! the newest is the active one, and rotating to a new journal fsyncs the old one first
//! and creates `<id + 1>.jnl` (`journal::writer::Writer::rotate`). A write flushed before the newest file is looked
//! up is therefore in that file or in one a rotation already synced. Check that again
//! when upgrading fjall; the tests below pin the layout.

use fjall::{Database, PersistMode};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub(super) struct JournalSync {
    dir: PathBuf,
    /// The active journal's id and a handle on it.
    active: Mutex<Option<(u64, File)>>,
    /// A failed fsync may have dropped dirty pages: later ones prove nothing.
    failed: AtomicBool,
}

impl JournalSync {
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            active: Mutex::new(None),
            failed: AtomicBool::new(false),
        }
    }

    /// Makes everything committed to `db` before the call durable. When the journal
    /// cannot be found or opened, falls back to fjall's own (locking) fsync.
    pub(super) fn sync(&self, db: &Database) -> fjall::Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("an earlier journal fsync failed").into());
        }
        db.persist(PersistMode::Buffer)?;
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        match self.open_newest(&mut active) {
            Ok(file) => file.sync_data().map_err(|e| {
                self.failed.store(true, Ordering::Release);
                e.into()
            }),
            Err(e) => {
                tracing::warn!(error = ?e, "journal not found; syncing through fjall");
                *active = None;
                db.persist(PersistMode::SyncData)
            }
        }
    }

    /// Makes every later sync fail, as after an fsync that failed (for tests).
    #[cfg(test)]
    pub(super) fn fail_syncs(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// The newest journal, opened (or still open from the last sync).
    fn open_newest<'a>(&self, active: &'a mut Option<(u64, File)>) -> io::Result<&'a File> {
        if !cfg!(unix) {
            // fdatasync through a read-only handle is a Unix guarantee.
            return Err(io::Error::other("not on Unix"));
        }
        // A rotation always goes from `<id>.jnl` to `<id + 1>.jnl`: while that next file
        // does not exist, the one open is still the active journal. One `stat` instead of
        // listing the directory on every sync (2–3 % of the CPU of small requests).
        if let Some((id, _)) = active {
            let next = self.dir.join(format!("{}.jnl", *id + 1));
            if !next.try_exists()? {
                return Ok(&active.as_ref().expect("checked just above").1);
            }
        }
        // An old journal can be deleted between the listing and the open: look again.
        for _ in 0..3 {
            let id = newest_journal(&self.dir)?;
            if active.as_ref().map(|(i, _)| *i) != Some(id) {
                match File::open(self.dir.join(format!("{id}.jnl"))) {
                    Ok(file) => *active = Some((id, file)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            return Ok(&active.as_ref().expect("the newest journal, opened").1);
        }
        Err(io::Error::other("the active journal kept moving"))
    }
}

/// The id of the newest `<id>.jnl` in `dir`.
fn newest_journal(dir: &Path) -> io::Result<u64> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".jnl"))
            .and_then(|n| n.parse::<u64>().ok());
        newest = newest.max(id);
    }
    newest.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no journal file"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fjall::KeyspaceCreateOptions;

    /// Whether the newest journal file holds `value`.
    fn newest_holds(dir: &Path, value: &[u8]) -> bool {
        let id = newest_journal(dir).unwrap();
        let bytes = std::fs::read(dir.join(format!("{id}.jnl"))).unwrap();
        bytes.windows(value.len()).any(|w| w == value)
    }

    #[test]
    fn commits_land_in_the_newest_jnl_file_which_moves_on_when_the_journal_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path())
            .journal_compression(fjall::CompressionType::None)
            .open()
            .unwrap();
        let ks = db
            .keyspace("k", || {
                KeyspaceCreateOptions::default().max_memtable_size(64 * 1024)
            })
            .unwrap();
        let sync = JournalSync::new(dir.path());
        let first = newest_journal(dir.path()).unwrap();
        ks.insert("a", b"first marker 1f2e3d4c").unwrap();
        sync.sync(&db).unwrap();
        assert!(newest_holds(dir.path(), b"first marker 1f2e3d4c"));

        // Past 64 MB the journal rotates when a memtable is flushed: later writes go to
        // a newer file (bounded: 40,000 writes of 4 KiB).
        let value = vec![1u8; 4096];
        for i in 0u32..40_000 {
            ks.insert(i.to_be_bytes(), &value).unwrap();
            if i % 1024 == 0 && newest_journal(dir.path()).unwrap() > first {
                break;
            }
        }
        // The rotation waits for fjall's flush worker, which a busy machine runs late:
        // give it (at most 30 s, a small write now and then to drive it) to catch up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut n = 0u32;
        while newest_journal(dir.path()).unwrap() == first && std::time::Instant::now() < deadline {
            ks.insert(format!("late-{n}"), &value).unwrap();
            n += 1;
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ks.insert("b", b"second marker 5a6b7c8d").unwrap();
        sync.sync(&db).unwrap();
        assert!(
            newest_journal(dir.path()).unwrap() > first,
            "the journal rotated"
        );
        assert!(newest_holds(dir.path(), b"second marker 5a6b7c8d"));
    }
}
