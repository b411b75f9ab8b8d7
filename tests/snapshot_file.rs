//! Scenario tests of snapshot files: round trip, fallback from damage, retention, temporary
//! files, failures while writing.

use std::path::Path;
use std::sync::Arc;
use tokend::snapshot::file::{
    snapshot_file_name, SnapshotError, SnapshotFiles, SNAPSHOT_HEADER_BYTES,
    SNAPSHOT_SYNC_CHUNK_BYTES,
};
use tokend::snapshot::FORMAT_VERSION;
use tokend::storage::{FaultyStorage, FsStorage};

fn store(dir: &Path) -> SnapshotFiles {
    SnapshotFiles::new(Arc::new(FsStorage::new()), dir)
}

fn payload(lsn: u64) -> Vec<u8> {
    (0..1000 + lsn as usize)
        .map(|i| (i * 31 + lsn as usize) as u8)
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn damage(dir: &Path, lsn: u64, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = dir.join(snapshot_file_name(lsn));
    let mut data = std::fs::read(&path).unwrap();
    edit(&mut data);
    std::fs::write(&path, data).unwrap();
}

#[test]
fn write_then_load_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir.path().join("data"));
    assert_eq!(s.load_newest_valid().unwrap(), None);
    let written = s.write(42, &payload(42)).unwrap();
    assert_eq!(
        written.file,
        dir.path().join("data").join(snapshot_file_name(42))
    );
    assert_eq!(
        written.bytes,
        (SNAPSHOT_HEADER_BYTES + payload(42).len()) as u64
    );
    assert_eq!(written.oldest_kept_lsn, 42);
    let loaded = s.load_newest_valid().unwrap().unwrap();
    assert_eq!((loaded.lsn, loaded.file), (42, written.file));
    assert_eq!(loaded.payload.as_ref(), payload(42).as_slice());
    let empty = s.write(43, b"").unwrap();
    assert_eq!(empty.oldest_kept_lsn, 42);
    assert_eq!(s.load_newest_valid().unwrap().unwrap().payload.len(), 0);
}

#[test]
fn only_the_newest_two_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    for lsn in 1..=5 {
        let written = s.write(lsn * 10, &payload(lsn)).unwrap();
        assert_eq!(written.oldest_kept_lsn, (lsn.max(2) - 1) * 10);
        if lsn > 2 {
            assert_eq!(
                written.removed,
                vec![dir.path().join(snapshot_file_name((lsn - 2) * 10))]
            );
        }
    }
    assert_eq!(
        names(dir.path()),
        vec![snapshot_file_name(40), snapshot_file_name(50)]
    );
}

#[test]
fn each_kind_of_damage_in_the_newest_falls_back_to_the_previous() {
    type Edit = fn(&mut Vec<u8>);
    let kinds: [(&str, Edit); 6] = [
        ("magic", |d| d[0] ^= 0xff),
        ("version", |d| {
            // A well-formed header of a version no build wrote.
            d[8..12].copy_from_slice(&0u32.to_le_bytes());
            let crc = crc32fast::hash(&d[..32]);
            d[32..36].copy_from_slice(&crc.to_le_bytes());
        }),
        ("header CRC", |d| d[13] ^= 1),
        ("payload CRC", |d| *d.last_mut().unwrap() ^= 0x80),
        ("length", |d| d.push(0)),
        ("short", |d| d.truncate(20)),
    ];
    for (kind, edit) in kinds {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.write(10, &payload(10)).unwrap();
        s.write(20, &payload(20)).unwrap();
        damage(dir.path(), 20, edit);
        let loaded = s.load_newest_valid().unwrap().unwrap();
        assert_eq!(loaded.lsn, 10, "{kind}");
        assert_eq!(loaded.payload.as_ref(), payload(10).as_slice(), "{kind}");

        // The damaged one is set aside, listed as such, and no longer counts as kept.
        let listed = s.list().unwrap();
        assert_eq!(listed.len(), 2, "{kind}");
        assert!(listed[0].set_aside && listed[0].problem.is_some(), "{kind}");
        assert_eq!(listed[0].lsn, 20);
        assert!(listed[1].is_valid(), "{kind}");
        let written = s.write(30, &payload(30)).unwrap();
        assert_eq!(written.oldest_kept_lsn, 10, "{kind}");
        assert!(written.removed.is_empty(), "{kind}");
    }
}

#[test]
fn all_damaged_is_an_error_naming_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(10, &payload(10)).unwrap();
    s.write(20, &payload(20)).unwrap();
    damage(dir.path(), 10, |d| d[40] ^= 1);
    damage(dir.path(), 20, |d| d[40] ^= 1);
    match s.load_newest_valid() {
        Err(e @ SnapshotError::AllDamaged { .. }) => {
            let message = e.to_string();
            for lsn in [10, 20] {
                assert!(message.contains(&snapshot_file_name(lsn)), "{message}");
            }
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn stray_temporary_files_are_removed_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(10, &payload(10)).unwrap();
    let stray = format!("{}.tmp", snapshot_file_name(20));
    std::fs::write(dir.path().join(&stray), b"half a snapshot").unwrap();
    std::fs::write(dir.path().join("unrelated.tmp"), b"not ours").unwrap();
    assert_eq!(s.load_newest_valid().unwrap().unwrap().lsn, 10);
    assert_eq!(
        names(dir.path()),
        vec![snapshot_file_name(10), "unrelated.tmp".to_string()]
    );
}

#[test]
fn a_failed_write_or_fsync_leaves_the_previous_snapshots_and_no_temporary_file() {
    for fault in ["write", "fsync", "directory fsync"] {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let s = SnapshotFiles::new(Arc::new(storage.clone()), dir.path());
        s.write(10, &payload(10)).unwrap();
        s.write(20, &payload(20)).unwrap();
        match fault {
            "write" => storage.fail_write_at(Some(storage.writes() + 2)),
            "fsync" => storage.fail_sync_at(Some(storage.syncs() + 1)),
            _ => storage.fail_dir_sync_at(Some(storage.dir_syncs() + 1)),
        }
        assert!(s.write(30, &payload(30)).is_err(), "{fault}");
        // Nothing older was deleted before the new snapshot was durable.
        assert!(
            names(dir.path()).contains(&snapshot_file_name(10)),
            "{fault}"
        );
        assert!(
            names(dir.path()).contains(&snapshot_file_name(20)),
            "{fault}"
        );
        assert!(
            names(dir.path()).iter().all(|n| !n.ends_with(".tmp")),
            "{fault}"
        );
        // The newest loadable snapshot is a complete one.
        let loaded = s.load_newest_valid().unwrap().unwrap();
        assert_eq!(
            loaded.payload.as_ref(),
            payload(loaded.lsn).as_slice(),
            "{fault}"
        );
    }
}

#[test]
fn payload_limit_is_checked_on_write_and_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).with_payload_bytes_max(100);
    assert!(matches!(
        s.write(1, &[0u8; 101]),
        Err(SnapshotError::TooLarge { .. })
    ));
    store(dir.path()).write(2, &[0u8; 101]).unwrap();
    assert!(matches!(
        s.load_newest_valid(),
        Err(SnapshotError::TooLarge { .. })
    ));
}

#[test]
fn read_newest_valid_falls_back_but_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(10, &payload(10)).unwrap();
    s.write(20, &payload(20)).unwrap();
    damage(dir.path(), 20, |d| d[40] ^= 1);
    let stray = format!("{}.tmp", snapshot_file_name(30));
    std::fs::write(dir.path().join(&stray), b"half a snapshot").unwrap();
    let before = names(dir.path());
    let found = s.read_newest_valid().unwrap();
    assert_eq!(found.damaged.len(), 1);
    assert_eq!(found.unfinished, vec![dir.path().join(&stray)]);
    let loaded = found.loaded.unwrap();
    assert_eq!(loaded.lsn, 10);
    assert_eq!(loaded.payload.as_ref(), payload(10).as_slice());
    assert_eq!(names(dir.path()), before, "nothing renamed or removed");
    // The start-up load still repairs.
    assert_eq!(s.load_newest_valid().unwrap().unwrap().lsn, 10);
    assert_ne!(names(dir.path()), before);
}

#[test]
fn snapshots_at_the_same_lsn_get_their_own_files_and_push_out_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    store.write(5, &payload(5)).unwrap();
    let first = store.write(9, b"state at 9, first").unwrap();
    assert_eq!(first.kept, 2);
    // Nothing was logged since: the next snapshot has the same LSN, but it
    // must not replace the file it may fall back on.
    let second = store.write(9, b"state at 9, second").unwrap();
    assert_ne!(second.file, first.file);
    assert_eq!((second.kept, second.oldest_kept_lsn), (2, 9));
    assert_eq!(second.removed, vec![dir.path().join(snapshot_file_name(5))]);
    let third = store.write(9, b"state at 9, third").unwrap();
    assert_eq!(third.removed, vec![first.file.clone()]);
    assert_eq!(names(dir.path()).len(), 2);
    let loaded = store.load_newest_valid().unwrap().unwrap();
    assert_eq!(
        (loaded.lsn, &loaded.payload[..]),
        (9, &b"state at 9, third"[..])
    );
    assert_eq!(loaded.file, third.file);
}

#[test]
fn a_large_snapshot_is_fsynced_in_chunks_and_a_failed_later_chunk_keeps_the_previous() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new();
    let s = SnapshotFiles::new(Arc::new(storage.clone()), dir.path());
    // Three chunks and a bit: four file fsyncs, so that the WAL's fsyncs
    // never queue behind one flush of the whole file.
    let big: Vec<u8> = (0..3 * SNAPSHOT_SYNC_CHUNK_BYTES + 7)
        .map(|i| (i % 251) as u8)
        .collect();
    let syncs = storage.syncs();
    s.write(10, &big).unwrap();
    assert_eq!(storage.syncs() - syncs, 4);
    assert_eq!(
        s.load_newest_valid().unwrap().unwrap().payload.as_ref(),
        big.as_slice()
    );

    // A failure at the last chunk's fsync: the new file never counts.
    storage.fail_sync_at(Some(storage.syncs() + 4));
    let newer: Vec<u8> = big.iter().map(|b| b ^ 0xff).collect();
    assert!(s.write(20, &newer).is_err());
    assert!(names(dir.path()).iter().all(|n| !n.ends_with(".tmp")));
    let loaded = s.load_newest_valid().unwrap().unwrap();
    assert_eq!((loaded.lsn, loaded.payload.as_ref()), (10, big.as_slice()));
}

#[test]
fn a_newer_format_is_refused_not_skipped_and_nothing_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.write(10, &payload(10)).unwrap();
    s.write(20, &payload(20)).unwrap();
    damage(dir.path(), 20, |d| {
        // An intact header of a format a later build writes.
        d[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let crc = crc32fast::hash(&d[..32]);
        d[32..36].copy_from_slice(&crc.to_le_bytes());
    });
    let before = names(dir.path());
    for _ in 0..2 {
        match s.load_newest_valid() {
            Err(e @ SnapshotError::NewerFormat { .. }) => {
                let message = e.to_string();
                assert!(message.contains(&snapshot_file_name(20)), "{message}");
                assert!(
                    message.contains(&format!("format version {}", FORMAT_VERSION + 1)),
                    "{message}"
                );
                assert!(message.contains(&FORMAT_VERSION.to_string()), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(names(dir.path()), before, "nothing set aside");
}
