//! Owner-only creation: every file tokend creates in a data dir is `0600`
//! and every directory it creates `0700`, so token data, the log and the
//! admin key digest are readable by the service's user alone whatever the
//! process umask allows. (A umask can only take bits away, so these modes
//! are never widened by it.)
//!
//! A directory that already exists is left as it is: its mode is the
//! operator's choice (a shared parent, a mount point), and tokend does not
//! change what it did not create. Files tokend replaces (snapshots written
//! anew, renamed into place) are new files, so they get the mode too.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of every directory tokend creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file tokend creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each owner-only; an existing one
/// is left alone.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Open options that create files owner-only (set the access flags on
/// them as usual).
pub fn file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_dirs_and_files_are_owner_only_and_an_existing_dir_is_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let existing = root.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nested = existing.join("a").join("b");
        create_dir_all(&nested).unwrap();
        assert_eq!(mode(&existing), 0o755);
        assert_eq!(mode(&existing.join("a")), DIR_MODE);
        assert_eq!(mode(&nested), DIR_MODE);
        create_dir_all(&nested).unwrap();
        let file = nested.join("f");
        file_options()
            .write(true)
            .create_new(true)
            .open(&file)
            .unwrap();
        assert_eq!(mode(&file), FILE_MODE);
    }
}
