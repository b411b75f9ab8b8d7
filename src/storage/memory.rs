//! [`MemoryStorage`]: files held in memory, so that the code that reads a
//! data dir (WAL replay, snapshot files, the whole restore) can run on bytes
//! that never touch a disk: many thousands of times a second under a fuzzer,
//! and in tests that must not depend on a file system.
//!
//! It keeps the [`Storage`] contract as the real file system does (a read
//! over its limit fails before copying, `create_new` refuses an existing
//! file, a rename replaces its target); everything is "durable" at once, as
//! there is no crash to survive.

use super::{Storage, StorageFile};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files by path, in memory. Cloning shares the files.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    /// Every file's bytes by full path; directories exist implicitly.
    files: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
}

impl MemoryStorage {
    /// No files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates or replaces the file `path` with `data`.
    pub fn insert(&self, path: impl Into<PathBuf>, data: Vec<u8>) {
        self.files.lock().insert(path.into(), data);
    }

    /// The bytes of the file `path`, if it exists.
    pub fn get(&self, path: &Path) -> Option<Vec<u8>> {
        self.files.lock().get(path).cloned()
    }

    /// Every file's path, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.lock().keys().cloned().collect()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// A file of a [`MemoryStorage`] opened for writing.
struct MemoryFile {
    /// The storage's files.
    files: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
    /// This file's path; a file removed while open fails every call.
    path: PathBuf,
}

impl MemoryFile {
    fn with<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> io::Result<T> {
        let mut files = self.files.lock();
        let data = files
            .get_mut(&self.path)
            .ok_or_else(|| not_found(&self.path))?;
        Ok(f(data))
    }
}

impl StorageFile for MemoryFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with(|data| data.extend_from_slice(buf))
    }

    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let end = usize::try_from(offset)
            .ok()
            .and_then(|start| Some((start, start.checked_add(buf.len())?)));
        let Some((start, end)) = end else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset does not fit memory",
            ));
        };
        self.with(|data| {
            if data.len() < end {
                // A gap before `offset` reads as zeros, as in a file.
                data.resize(end, 0);
            }
            data[start..end].copy_from_slice(buf);
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        self.with(|_| ())
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|data| data.len() as u64)
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "length does not fit memory")
        })?;
        self.with(|data| data.truncate(len))
    }
}

impl Storage for MemoryStorage {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(self
            .files
            .lock()
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        if !self.files.lock().contains_key(path) {
            return Err(not_found(path));
        }
        Ok(Box::new(MemoryFile {
            files: Arc::clone(&self.files),
            path: path.to_path_buf(),
        }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let mut files = self.files.lock();
        if files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", path.display()),
            ));
        }
        files.insert(path.to_path_buf(), Vec::new());
        Ok(Box::new(MemoryFile {
            files: Arc::clone(&self.files),
            path: path.to_path_buf(),
        }))
    }

    fn read_file(&self, path: &Path, bytes_max: u64) -> io::Result<Vec<u8>> {
        let files = self.files.lock();
        let data = files.get(path).ok_or_else(|| not_found(path))?;
        if data.len() as u64 > bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is {} bytes, more than the limit of {bytes_max}",
                    path.display(),
                    data.len()
                ),
            ));
        }
        Ok(data.clone())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let files = self.files.lock();
        files
            .get(path)
            .map(|data| data.len() as u64)
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files.lock();
        let data = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_path_buf(), data);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.files
            .lock()
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_behave_as_the_storage_contract_says() {
        let s = MemoryStorage::new();
        let dir = Path::new("/d");
        let path = dir.join("f");
        assert_eq!(
            s.open_write(&path).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        let mut f = s.create_new(&path).unwrap();
        f.write_all(b"hello world").unwrap();
        f.sync().unwrap();
        assert_eq!(f.len().unwrap(), 11);
        f.truncate(5).unwrap();
        f.write_all(b"!").unwrap();
        assert_eq!(s.read_file(&path, 100).unwrap(), b"hello!");
        let mut again = s.open_write(&path).unwrap();
        again.write_all_at(1, b"E").unwrap();
        again.write_all_at(8, b"z").unwrap();
        assert_eq!(s.get(&path).unwrap(), b"hEllo!\0\0z");
        again.truncate(6).unwrap();
        assert_eq!(
            s.read_file(&path, 5).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(s.file_len(&path).unwrap(), 6);
        assert_eq!(s.list_dir(dir).unwrap(), vec!["f".to_string()]);
        assert!(s.list_dir(Path::new("/other")).unwrap().is_empty());
        assert_eq!(
            s.create_new(&path).err().map(|e| e.kind()),
            Some(io::ErrorKind::AlreadyExists)
        );
        let moved = dir.join("g");
        s.rename(&path, &moved).unwrap();
        assert_eq!(s.get(&moved).as_deref(), Some(&b"hEllo!"[..]));
        assert_eq!(
            s.file_len(&path).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        s.remove_file(&moved).unwrap();
        assert!(s.paths().is_empty());
        assert!(f.write_all(b"x").is_err(), "a removed file is gone");
    }
}
