//! [`FsStorage`]: the real file system through `std::fs`, creating files and
//! directories owner-only ([`super::private`]).

use super::{private, Storage, StorageFile};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl FsStorage {
    /// The real file system.
    pub fn new() -> Self {
        FsStorage
    }
}

/// A `std::fs::File` opened for writing.
struct FsFile {
    /// The open file, never in append mode: Linux would put every positioned write at the end.
    file: File,
}

impl StorageFile for FsFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // Without append mode, "at the end" is a seek (one cheap syscall) before the write.
        self.file.seek(SeekFrom::End(0))?;
        self.file.write_all(buf)
    }

    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        // pwrite: no seek, and the file cursor plays no part.
        self.file.write_all_at(buf, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync: flushes the data and the metadata needed to read it back (the size, newly
        // allocated blocks), which is all a reader after a crash needs; timestamps are not worth
        // a journal commit. Overwriting blocks already written and synced needs no metadata at
        // all: that is why WAL segments are pre-allocated with zeros.
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        // A truncation changes the size only: sync_all so the new length is on disk.
        self.file.sync_all()
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        private::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            // A name that is not UTF-8 cannot be one of ours; skip it rather than fail.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = private::file_options().write(true).open(path)?;
        Ok(Box::new(FsFile { file }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        let file = private::file_options()
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(FsFile { file }))
    }

    fn read_file(&self, path: &Path, bytes_max: u64) -> io::Result<Vec<u8>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len > bytes_max {
            return Err(too_large(path, len, bytes_max));
        }
        let capacity = usize::try_from(len).map_err(|_| too_large(path, len, bytes_max))?;
        let mut buf = Vec::with_capacity(capacity);
        // take(bytes_max + 1): a file that grows while being read still cannot exceed the limit.
        file.take(bytes_max.saturating_add(1))
            .read_to_end(&mut buf)?;
        if buf.len() as u64 > bytes_max {
            return Err(too_large(path, buf.len() as u64, bytes_max));
        }
        Ok(buf)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // On Linux a directory opened read-only can be fsynced; that persists its entries.
        File::open(dir)?.sync_all()
    }
}

fn too_large(path: &Path, len: u64, bytes_max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} is {len} bytes, more than the limit of {bytes_max}",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_truncate_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let path = dir.path().join("f");
        assert_eq!(
            s.open_write(&path).err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound),
            "open_write creates nothing"
        );
        let mut f = s.create_new(&path).unwrap();
        f.write_all(b"hello world").unwrap();
        f.sync().unwrap();
        assert_eq!(f.len().unwrap(), 11);
        f.truncate(5).unwrap();
        f.write_all(b"!").unwrap();
        assert_eq!(s.read_file(&path, 100).unwrap(), b"hello!");
        assert_eq!(s.file_len(&path).unwrap(), 6);
        s.sync_dir(dir.path()).unwrap();
        assert_eq!(s.list_dir(dir.path()).unwrap(), vec!["f".to_string()]);
    }

    #[test]
    fn positioned_writes_overwrite_in_place_and_write_all_goes_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let path = dir.path().join("f");
        s.write_new_file(&path, &[0u8; 8]).unwrap();
        let mut f = s.open_write(&path).unwrap();
        f.write_all_at(2, b"ab").unwrap();
        assert_eq!(f.len().unwrap(), 8, "an overwrite does not grow the file");
        f.write_all(b"end").unwrap();
        f.write_all_at(12, b"z").unwrap();
        f.write_all(b"!").unwrap();
        f.sync().unwrap();
        assert_eq!(s.read_file(&path, 100).unwrap(), b"\0\0ab\0\0\0\0end\0z!");
    }

    #[test]
    fn read_file_refuses_files_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let path = dir.path().join("big");
        s.write_new_file(&path, &[7u8; 100]).unwrap();
        let err = s.read_file(&path, 99).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(s.read_file(&path, 100).unwrap().len(), 100);
    }

    #[test]
    fn create_new_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsStorage::new();
        let path = dir.path().join("x");
        s.write_new_file(&path, b"a").unwrap();
        assert_eq!(
            s.create_new(&path).err().map(|e| e.kind()),
            Some(io::ErrorKind::AlreadyExists)
        );
    }
}
