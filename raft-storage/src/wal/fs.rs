//! The filesystem seam: the few file operations the stores use, on the real filesystem or on
//! turmoil's simulated one (feature `turmoil`), so that one code path runs in production and
//! under simulated disk crashes.
//!
//! Unix only: positioned reads and writes come from `std::os::unix::fs::FileExt`, which
//! turmoil's files implement too.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The lock file of a data directory (see [`Fs::lock_dir`]).
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Which filesystem a store works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fs {
    /// The operating system's.
    Real,
    /// The simulated filesystem of the current turmoil host. Calls must be made on the
    /// simulation's thread (see `../shared` notes on turmoil's filesystem: a worker thread
    /// would draw fault randomness from outside the seed).
    #[cfg(feature = "turmoil")]
    Simulated,
}

/// An open file on one of the filesystems.
#[derive(Debug)]
pub(crate) enum File {
    Real(std::fs::File),
    #[cfg(feature = "turmoil")]
    Simulated(turmoil::fs::shim::std::fs::File),
}

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Open {
    /// Read only; it must exist.
    Read,
    /// Read and write; it must exist.
    Write,
    /// Read and write; created empty, and it must not exist yet.
    CreateNew,
    /// Read and write; created if missing, kept as it is if present.
    CreateOrKeep,
}

macro_rules! on_fs {
    ($fs:expr, $real:expr, $sim:expr) => {
        match $fs {
            Fs::Real => $real,
            #[cfg(feature = "turmoil")]
            Fs::Simulated => $sim,
        }
    };
}

macro_rules! on_file {
    ($file:expr, $f:ident => $body:expr) => {
        match $file {
            File::Real($f) => $body,
            #[cfg(feature = "turmoil")]
            File::Simulated($f) => $body,
        }
    };
}

impl Fs {
    pub(crate) fn open(self, path: &Path, how: Open) -> io::Result<File> {
        macro_rules! options {
            ($options:expr) => {{
                let mut options = $options;
                match how {
                    Open::Read => options.read(true),
                    Open::Write => options.read(true).write(true),
                    Open::CreateNew => options.read(true).write(true).create_new(true),
                    Open::CreateOrKeep => options.read(true).write(true).create(true),
                };
                options.open(path)
            }};
        }
        on_fs!(
            self,
            options!(std::fs::OpenOptions::new()).map(File::Real),
            options!(turmoil::fs::shim::std::fs::OpenOptions::new()).map(File::Simulated)
        )
    }

    pub(crate) fn create_dir_all(self, path: &Path) -> io::Result<()> {
        on_fs!(
            self,
            std::fs::create_dir_all(path),
            turmoil::fs::shim::std::fs::create_dir_all(path)
        )
    }

    /// Creates `dir` and its missing parents, and syncs the directory holding each one
    /// created (from the top down), so the new directories survive a power loss along with
    /// whatever is later synced in them.
    pub(crate) fn create_dir_durably(self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut current = dir;
        while !self.exists(current) {
            missing.push(current);
            match current.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => current = parent,
                _ => break,
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        self.create_dir_all(dir)?;
        for created in missing.into_iter().rev() {
            self.sync_dir(parent_of(created))?;
        }
        Ok(())
    }

    /// The names of the files in `dir`, sorted (so that nothing depends on the order the
    /// filesystem lists them in).
    pub(crate) fn list(self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        on_fs!(
            self,
            {
                for entry in std::fs::read_dir(dir)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
            },
            {
                for entry in turmoil::fs::shim::std::fs::read_dir(dir)? {
                    let entry = entry?;
                    if entry.file_type()?.is_file() {
                        names.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
            }
        );
        names.sort();
        Ok(names)
    }

    pub(crate) fn exists(self, path: &Path) -> bool {
        on_fs!(
            self,
            path.exists(),
            turmoil::fs::shim::std::fs::exists(path)
        )
    }

    pub(crate) fn rename(self, from: &Path, to: &Path) -> io::Result<()> {
        on_fs!(
            self,
            std::fs::rename(from, to),
            turmoil::fs::shim::std::fs::rename(from, to)
        )
    }

    pub(crate) fn remove_file(self, path: &Path) -> io::Result<()> {
        on_fs!(
            self,
            std::fs::remove_file(path),
            turmoil::fs::shim::std::fs::remove_file(path)
        )
    }

    /// Makes the directory's entries (files created, renamed or removed in it) durable.
    pub(crate) fn sync_dir(self, dir: &Path) -> io::Result<()> {
        on_fs!(
            self,
            std::fs::File::open(dir)?.sync_all(),
            turmoil::fs::shim::std::fs::sync_dir(dir)
        )
    }

    /// The whole contents of a file.
    pub(crate) fn read(self, path: &Path) -> io::Result<Vec<u8>> {
        on_fs!(
            self,
            std::fs::read(path),
            turmoil::fs::shim::std::fs::read(path)
        )
    }

    /// Replaces the file at `path` with `contents` atomically: written to a temporary file,
    /// synced, renamed into place, and the directory synced, so a crash leaves either the old
    /// contents or the new, never a mixture or nothing.
    pub(crate) fn replace(self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let temporary = temporary_of(path);
        // A temporary file left by a crash is garbage: start it over.
        if self.exists(&temporary) {
            self.remove_file(&temporary)?;
        }
        let file = self.open(&temporary, Open::CreateNew)?;
        file.write_all_at(contents, 0)?;
        file.sync_all()?;
        drop(file);
        self.rename(&temporary, path)?;
        self.sync_dir(parent_of(path))
    }

    /// Locks the data directory `dir` for this process: takes the lock on its [`LOCK_FILE`]
    /// (created if missing) and returns the file, which holds the lock until it is dropped.
    /// Fails with `WouldBlock` when another store has the directory open.
    pub(crate) fn lock_dir(self, dir: &Path) -> io::Result<File> {
        let file = self.open(&dir.join(LOCK_FILE), Open::CreateOrKeep)?;
        self.try_lock(&file)?;
        Ok(file)
    }

    /// Takes the exclusive lock on `file` (the data directory's lock file), failing at once
    /// with `WouldBlock` when another process holds it. The lock goes with the file handle.
    /// The simulated filesystem has one process per host, so there is nothing to lock.
    pub(crate) fn try_lock(self, file: &File) -> io::Result<()> {
        match file {
            File::Real(file) => file.try_lock().map_err(|error| match error {
                std::fs::TryLockError::WouldBlock => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another process has this directory open",
                ),
                std::fs::TryLockError::Error(error) => error,
            }),
            #[cfg(feature = "turmoil")]
            File::Simulated(_) => Ok(()),
        }
    }
}

/// The temporary file `replace` writes before renaming it to `path`.
pub(crate) fn temporary_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

impl File {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let read = on_file!(self, f => f.read_at(&mut buf[done..], offset + done as u64))?;
            if read == 0 {
                break;
            }
            done += read;
        }
        Ok(done)
    }

    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        on_file!(self, f => f.write_all_at(buf, offset))
    }

    /// `fdatasync`: the data written so far, and the length, are durable.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        on_file!(self, f => f.sync_data())
    }

    /// `fsync`: the data and every piece of metadata are durable.
    pub(crate) fn sync_all(&self) -> io::Result<()> {
        on_file!(self, f => f.sync_all())
    }

    pub(crate) fn len(&self) -> io::Result<u64> {
        on_file!(self, f => f.metadata().map(|m| m.len()))
    }

    /// The whole contents of the file.
    pub(crate) fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read"))?;
        let mut data = vec![0; len];
        let read = self.read_at(&mut data, 0)?;
        data.truncate(read);
        Ok(data)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_holds_the_new_contents_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        Fs::Real.replace(&path, b"first").unwrap();
        Fs::Real.replace(&path, b"second").unwrap();
        assert_eq!(Fs::Real.read(&path).unwrap(), b"second");
        assert_eq!(Fs::Real.list(dir.path()).unwrap(), ["meta"]);
    }

    #[test]
    fn missing_directories_are_created_down_to_the_last() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b").join("c");
        Fs::Real.create_dir_durably(&dir).unwrap();
        assert!(dir.is_dir());
        Fs::Real.create_dir_durably(&dir).unwrap();
    }

    #[test]
    fn a_locked_file_cannot_be_locked_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("LOCK");
        let first = Fs::Real.open(&path, Open::CreateOrKeep).unwrap();
        Fs::Real.try_lock(&first).unwrap();
        let second = Fs::Real.open(&path, Open::CreateOrKeep).unwrap();
        let error = Fs::Real.try_lock(&second).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        drop(first);
        Fs::Real.try_lock(&second).unwrap();
    }
}
