//! Scenario tests of the write-ahead log: round trips, torn tails at every byte (in
//! pre-allocated segments, with zeros or garbage after the cut, and in segments of earlier
//! builds that end at their last frame), zeroed tails, bit flips, misplaced records, injected
//! write and fsync failures under concurrency, group commit, appends that never change a
//! segment's size.

use futures_util::future::join_all;
use futures_util::FutureExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokend::storage::{FaultyStorage, FsStorage, Storage};
use tokend::wal::frame::{self, FRAME_HEADER_BYTES};
use tokend::wal::segment::{HEADER_BYTES, SPARE_FILE_NAME};
use tokend::wal::{
    list_segments, read_from, FsyncMode, Lsn, Record, Truncation, Wal, WalError, WalOptions,
};

fn options(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        fsync: FsyncMode::Always,
        fsync_interval_ms: 1000,
        segment_bytes_max,
        record_bytes_max: 1 << 16,
        buffer_bytes_max: 1 << 22,
        ..WalOptions::default()
    }
}

fn fs() -> Arc<dyn Storage> {
    Arc::new(FsStorage::new())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn payload(lsn: Lsn) -> Vec<u8> {
    let mut p = format!("record-{lsn}-").into_bytes();
    p.resize(p.len() + (lsn as usize * 7) % 90, b'a' + (lsn % 26) as u8);
    p
}

/// Appends payload(1..=n) to a fresh WAL in `dir` and waits for all of them.
fn write_log(dir: &Path, opts: &WalOptions, n: u64) {
    let wal = Wal::open(fs(), dir, opts.clone(), 1).unwrap();
    let lsns: Vec<Lsn> = (1..=n).map(|i| wal.append(&payload(i)).unwrap()).collect();
    assert_eq!(lsns, (1..=n).collect::<Vec<_>>());
    runtime().block_on(wal.wait_durable(n)).unwrap();
}

struct Replayed {
    records: Vec<Record>,
    truncation: Option<Truncation>,
    next_lsn: Lsn,
}

fn replay(dir: &Path, after: Lsn, opts: &WalOptions) -> Result<Replayed, WalError> {
    let mut replay = read_from(fs(), dir, after, opts)?;
    let records = replay.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok(Replayed {
        truncation: replay.truncation().cloned(),
        next_lsn: replay.next_lsn(),
        records,
    })
}

fn assert_records(records: &[Record], lsns: std::ops::RangeInclusive<Lsn>) {
    let got: Vec<Lsn> = records.iter().map(|r| r.lsn).collect();
    assert_eq!(got, lsns.clone().collect::<Vec<_>>());
    for r in records {
        assert_eq!(
            r.payload.as_ref(),
            payload(r.lsn).as_slice(),
            "LSN {}",
            r.lsn
        );
    }
}

/// A frame's place on disk.
#[derive(Debug, Clone)]
struct Placed {
    lsn: Lsn,
    file: PathBuf,
    offset: usize,
    len: usize,
}

/// Whether every byte of `data` is zero.
fn zeros(data: &[u8]) -> bool {
    data.iter().all(|b| *b == 0)
}

/// Every frame of every segment (after its header, up to the zeros after its last frame), in
/// order.
fn frames_on_disk(dir: &Path) -> Vec<Placed> {
    let mut out = Vec::new();
    for seg in list_segments(&FsStorage::new(), dir).unwrap() {
        let data = std::fs::read(&seg.path).unwrap();
        let mut pos = HEADER_BYTES;
        while pos < data.len() && !zeros(&data[pos..]) {
            let f = frame::decode(&data[pos..], usize::MAX).unwrap();
            out.push(Placed {
                lsn: f.lsn,
                file: seg.path.clone(),
                offset: pos,
                len: f.encoded_len(),
            });
            pos += f.encoded_len();
        }
    }
    out
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
    }
    to
}

fn in_copy(copy: &tempfile::TempDir, original: &Path) -> PathBuf {
    copy.path().join(original.file_name().unwrap())
}

fn flip_bit(path: &Path, offset: usize, bit: u8) {
    let mut data = std::fs::read(path).unwrap();
    data[offset] ^= 1 << bit;
    std::fs::write(path, data).unwrap();
}

#[test]
fn round_trip_across_segments_and_replay_from_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1000);
    write_log(dir.path(), &opts, 500);
    let segments = list_segments(&FsStorage::new(), dir.path()).unwrap();
    assert!(segments.len() > 10, "{} segments", segments.len());
    // Every segment is pre-allocated to its full size; a closed one is full: its frames end
    // where the next frame would not have fitted.
    let frames = frames_on_disk(dir.path());
    for (i, segment) in segments.iter().enumerate() {
        let len = std::fs::metadata(&segment.path).unwrap().len();
        assert_eq!(len, 1000, "{}", segment.path.display());
        if i + 1 < segments.len() {
            let end = frames
                .iter()
                .filter(|f| f.file == segment.path)
                .map(|f| f.offset + f.len)
                .max()
                .unwrap();
            let next_frame = frames.iter().find(|f| f.file == segments[i + 1].path);
            assert!(
                end + next_frame.unwrap().len > 1000,
                "segment {i} closed early"
            );
        }
    }

    let all = replay(dir.path(), 0, &opts).unwrap();
    assert_records(&all.records, 1..=500);
    assert_eq!(all.truncation, None);
    assert_eq!(all.next_lsn, 501);

    let middle = replay(dir.path(), 250, &opts).unwrap();
    assert_records(&middle.records, 251..=500);

    let at_end = replay(dir.path(), 500, &opts).unwrap();
    assert!(at_end.records.is_empty());
    assert_eq!(at_end.next_lsn, 501);

    // Continue after a restart: the next LSN follows on, in the same log.
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 501).unwrap();
    for i in 501..=520 {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
    }
    wal.flush().unwrap();
    drop(wal);
    assert_records(&replay(dir.path(), 0, &opts).unwrap().records, 1..=520);
}

#[test]
fn replay_of_an_empty_directory_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let r = replay(dir.path(), 0, &options(1000)).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.next_lsn, 1);
    assert_eq!(replay(dir.path(), 40, &options(1000)).unwrap().next_lsn, 41);
}

/// A crash while a new segment was being created leaves its header cut short
/// (or the file empty): it holds no records, so replay cuts it back to
/// nothing and the log goes on in it. Before the last segment the same is
/// damage.
#[test]
fn a_last_segment_whose_header_was_cut_short_holds_no_records_and_is_reused() {
    use tokend::wal::segment::{encode_header, segment_file_name};
    let original = tempfile::tempdir().unwrap();
    let opts = options(1 << 20);
    write_log(original.path(), &opts, 30);
    let header = encode_header(31);
    for cut in 0..=HEADER_BYTES {
        let copy = copy_dir(original.path());
        let torn = copy.path().join(segment_file_name(31));
        std::fs::write(&torn, &header[..cut]).unwrap();
        if cut == HEADER_BYTES {
            // A whole header whose CRC does not check out, with nothing after it.
            flip_bit(&torn, 13, 0);
        }
        let r = replay(copy.path(), 0, &opts).unwrap();
        assert_records(&r.records, 1..=30);
        assert_eq!(r.next_lsn, 31, "cut {cut}");
        match &r.truncation {
            None => assert_eq!(cut, 0, "a torn header of {cut} bytes is reported"),
            Some(t) => assert_eq!((t.file.clone(), t.offset), (torn.clone(), 0)),
        }
        // Cut: zeroed, which a segment of zeros is (no header was written).
        let cut_back = std::fs::read(&torn).unwrap();
        assert_eq!(cut_back.len(), cut);
        assert!(zeros(&cut_back), "cut {cut}");
        let wal = Wal::open(fs(), copy.path(), opts.clone(), 31).unwrap();
        assert_eq!(wal.append(&payload(31)).unwrap(), 31);
        wal.flush().unwrap();
        drop(wal);
        assert_records(&replay(copy.path(), 0, &opts).unwrap().records, 1..=31);
        assert_eq!(&std::fs::read(&torn).unwrap()[..HEADER_BYTES], &header[..]);
    }
    // A header cut short before the last segment cannot be a crash's doing.
    let copy = copy_dir(original.path());
    std::fs::write(copy.path().join(segment_file_name(31)), &header[..10]).unwrap();
    let later = Wal::open(fs(), copy.path(), opts.clone(), 31);
    assert!(later.is_err(), "the torn segment must be cut first");
    std::fs::write(copy.path().join(segment_file_name(40)), encode_header(40)).unwrap();
    assert!(matches!(
        replay(copy.path(), 0, &opts),
        Err(WalError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn cut_at_every_byte_of_the_last_three_records() {
    let original = tempfile::tempdir().unwrap();
    let opts = options(600);
    write_log(original.path(), &opts, 40);
    let frames = frames_on_disk(original.path());
    let last_file = frames.last().unwrap().file.clone();
    let tail: Vec<&Placed> = frames[frames.len() - 3..].iter().collect();
    assert!(tail.iter().all(|p| p.file == last_file));
    assert!(frames[0].file != last_file, "want earlier segments too");
    let file_len = tail[2].offset + tail[2].len;

    for cut in tail[0].offset..file_len {
        let copy = copy_dir(original.path());
        let file = in_copy(&copy, &last_file);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        // The records wholly before the cut survive, the one it runs through is dropped.
        let kept = tail.iter().filter(|p| p.offset + p.len <= cut).count();
        let last_kept = tail[0].lsn - 1 + kept as u64;
        let boundary = tail.iter().find(|p| p.offset + p.len > cut).unwrap().offset;

        let before = std::fs::read(&file).unwrap();
        let r = replay(copy.path(), 0, &opts).unwrap();
        assert_records(&r.records, 1..=last_kept);
        assert_eq!(r.next_lsn, last_kept + 1);
        match &r.truncation {
            None => assert_eq!(cut, boundary, "cut {cut} not reported"),
            Some(t) => {
                assert_eq!((t.file.clone(), t.offset), (file.clone(), boundary as u64));
                // Up to the last byte of the torn frame that is not zero.
                let garbage = before[boundary..].iter().rposition(|b| *b != 0).unwrap() + 1;
                assert_eq!(t.dropped_bytes, garbage as u64, "cut {cut}");
            }
        }
        // The torn bytes are zeroed; the file keeps its length.
        let after = std::fs::read(&file).unwrap();
        assert_eq!(after.len(), cut);
        assert_eq!(after[..boundary], before[..boundary]);
        assert!(zeros(&after[boundary..]), "cut {cut}");

        // Appending continues with the right LSN, after the cut.
        let wal = Wal::open(fs(), copy.path(), opts.clone(), r.next_lsn).unwrap();
        assert_eq!(wal.append(&payload(last_kept + 1)).unwrap(), last_kept + 1);
        wal.flush().unwrap();
        drop(wal);
        let again = replay(copy.path(), 0, &opts).unwrap();
        assert_records(&again.records, 1..=last_kept + 1);
        assert_eq!(again.truncation, None);
    }
}

#[test]
fn every_bit_of_the_last_record_flipped_is_never_accepted() {
    let original = tempfile::tempdir().unwrap();
    let opts = options(600);
    write_log(original.path(), &opts, 30);
    let frames = frames_on_disk(original.path());
    let last = frames.last().unwrap().clone();

    for bit in 0..last.len * 8 {
        let copy = copy_dir(original.path());
        let file = in_copy(&copy, &last.file);
        flip_bit(&file, last.offset + bit / 8, (bit % 8) as u8);
        match replay(copy.path(), 0, &opts) {
            Ok(r) => {
                assert_records(&r.records, 1..=last.lsn - 1);
                let t = r.truncation.expect("damage must be reported");
                assert_eq!((t.file, t.offset), (file, last.offset as u64), "bit {bit}");
            }
            Err(WalError::Corrupt {
                file: f, offset, ..
            }) => assert_eq!((f, offset), (file, last.offset as u64), "bit {bit}"),
            Err(e) => panic!("bit {bit}: {e}"),
        }
    }
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn bit_flips_in_earlier_records_are_corruption_at_the_right_place() {
    let original = tempfile::tempdir().unwrap();
    let opts = options(600);
    write_log(original.path(), &opts, 60);
    let frames = frames_on_disk(original.path());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);

    for trial in 0..300 {
        // Any record but the very last one: in the last segment too, a valid record follows.
        let victim = &frames[(rng.next() % (frames.len() as u64 - 1)) as usize];
        let bit = rng.next() as usize % (victim.len * 8);
        let copy = copy_dir(original.path());
        let file = in_copy(&copy, &victim.file);
        flip_bit(&file, victim.offset + bit / 8, (bit % 8) as u8);
        match replay(copy.path(), 0, &opts) {
            Err(WalError::Corrupt {
                file: f,
                offset,
                reason,
            }) => {
                assert_eq!(
                    (f, offset),
                    (file, victim.offset as u64),
                    "trial {trial}: LSN {} bit {bit}: {reason}",
                    victim.lsn
                );
            }
            Err(e) => panic!("trial {trial}: {e}"),
            Ok(_) => panic!(
                "trial {trial}: flip in LSN {} bit {bit} accepted",
                victim.lsn
            ),
        }
    }
}

#[test]
fn corruption_messages_name_the_file_and_offset() {
    let original = tempfile::tempdir().unwrap();
    let opts = options(1 << 20);
    write_log(original.path(), &opts, 10);
    let frames = frames_on_disk(original.path());
    let victim = &frames[4];
    flip_bit(&victim.file, victim.offset + FRAME_HEADER_BYTES, 0);
    let err = replay(original.path(), 0, &opts).err().unwrap();
    let message = err.to_string();
    assert!(
        message.contains(&victim.file.display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("byte offset {}", victim.offset)),
        "{message}"
    );
}

/// Writes records of equal size, so that one record's bytes fit exactly over another's.
fn write_equal_records(dir: &Path, opts: &WalOptions, n: u64) {
    let wal = Wal::open(fs(), dir, opts.clone(), 1).unwrap();
    for i in 1..=n {
        wal.append(format!("same-size-{i:04}").as_bytes()).unwrap();
    }
    wal.flush().unwrap();
}

fn copy_record_over(from: &Placed, to: &Placed) {
    assert_eq!(from.len, to.len);
    let source = std::fs::read(&from.file).unwrap();
    let mut target = std::fs::read(&to.file).unwrap();
    target[to.offset..to.offset + to.len]
        .copy_from_slice(&source[from.offset..from.offset + from.len]);
    std::fs::write(&to.file, target).unwrap();
}

#[test]
fn an_older_record_copied_over_a_newer_one_is_detected_by_its_lsn() {
    let opts = options(300);
    let original = tempfile::tempdir().unwrap();
    write_equal_records(original.path(), &opts, 40);
    let frames = frames_on_disk(original.path());
    let last_file = frames.last().unwrap().file.clone();
    let in_last: Vec<&Placed> = frames.iter().filter(|p| p.file == last_file).collect();
    assert!(in_last.len() >= 3);

    // Over a record in the middle of the last segment, and over one in an earlier segment.
    for victim in [in_last[1], &frames[5]] {
        let copy = copy_dir(original.path());
        let mut from = frames[0].clone();
        from.file = in_copy(&copy, &from.file);
        let mut to = victim.clone();
        to.file = in_copy(&copy, &to.file);
        copy_record_over(&from, &to);
        match replay(copy.path(), 0, &opts) {
            Err(WalError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!((file, offset), (to.file.clone(), to.offset as u64));
                assert!(
                    reason.contains(&format!("LSN 1 where {} was expected", victim.lsn)),
                    "{reason}"
                );
            }
            other => panic!("LSN {}: {:?}", victim.lsn, other.map(|r| r.records.len())),
        }
    }

    // Over the very last record: it cannot be told from stale bytes at the tail, so it is
    // dropped as a torn tail, reported, and never accepted as the record it replaced.
    let copy = copy_dir(original.path());
    let mut from = frames[0].clone();
    from.file = in_copy(&copy, &from.file);
    let mut to = frames.last().unwrap().clone();
    to.file = in_copy(&copy, &to.file);
    copy_record_over(&from, &to);
    let r = replay(copy.path(), 0, &opts).unwrap();
    assert_eq!(r.records.len() as u64, to.lsn - 1);
    let t = r.truncation.unwrap();
    assert_eq!((t.file, t.offset), (to.file, to.offset as u64));
    assert!(t.reason.contains("LSN 1 where"), "{}", t.reason);
}

#[test]
fn a_valid_record_that_skips_ahead_at_the_tail_is_corruption_not_a_torn_tail() {
    let opts = options(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    write_equal_records(dir.path(), &opts, 10);
    let frames = frames_on_disk(dir.path());
    let last = frames.last().unwrap();
    // Record 10 replaced by a well-formed record 13: records 10..=12 are missing, not torn.
    let body = b"same-size-0013";
    let mut skipped = Vec::new();
    frame::encode_into(&mut skipped, 13, body, &frame::PayloadCrc::new(body));
    assert_eq!(skipped.len(), last.len);
    let mut data = std::fs::read(&last.file).unwrap();
    data[last.offset..last.offset + last.len].copy_from_slice(&skipped);
    std::fs::write(&last.file, data).unwrap();
    match replay(dir.path(), 0, &opts) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (last.file.clone(), last.offset as u64));
        }
        other => panic!("{:?}", other.map(|r| r.records.len())),
    }
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(500);
    write_log(dir.path(), &opts, 100);
    let segments = list_segments(&FsStorage::new(), dir.path()).unwrap();
    assert!(segments.len() >= 4);
    std::fs::remove_file(&segments[1].path).unwrap();
    match replay(dir.path(), 0, &opts) {
        Err(WalError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (segments[2].path.clone(), 0));
        }
        other => panic!("{:?}", other.map(|r| r.records.len())),
    }
    // Replay from the first segment's LSNs needs nothing that is missing: skipped segments are
    // fine, missing needed ones are not.
    let after = segments[2].first_lsn - 1;
    assert_records(
        &replay(dir.path(), after, &opts).unwrap().records,
        after + 1..=100,
    );
    std::fs::remove_file(&segments[0].path).unwrap();
    assert!(matches!(
        replay(dir.path(), 0, &opts),
        Err(WalError::Corrupt { offset: 0, .. })
    ));
}

#[test]
fn cut_before_drops_only_whole_covered_segments() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(500);
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 1).unwrap();
    for i in 1..=100 {
        wal.append(&payload(i)).unwrap();
    }
    wal.flush().unwrap();
    assert!(wal.bytes_since_cut() > 0);
    let before = list_segments(&FsStorage::new(), dir.path()).unwrap();
    let keep_from = before[3].first_lsn + 1;
    let removed = wal.cut_before(keep_from).unwrap();
    assert_eq!(
        removed,
        before[..3]
            .iter()
            .map(|s| s.path.clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(wal.bytes_since_cut(), 0);
    assert_records(
        &replay(dir.path(), keep_from - 1, &opts).unwrap().records,
        keep_from..=100,
    );
    // Never the segment being written to, even when everything is covered.
    wal.cut_before(Lsn::MAX).unwrap();
    let left = list_segments(&FsStorage::new(), dir.path()).unwrap();
    assert_eq!(left, before[before.len() - 1..].to_vec());
    assert_eq!(wal.append(b"more").unwrap(), 101);
    wal.flush().unwrap();
}

#[test]
fn open_refuses_reused_lsns_and_an_unrecovered_tail_and_bridges_a_snapshot_gap() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1 << 20);
    write_log(dir.path(), &opts, 10);
    assert!(matches!(
        Wal::open(fs(), dir.path(), opts.clone(), 10),
        Err(WalError::LsnBehind { last_lsn: 10, .. })
    ));

    // A snapshot at LSN 15 covers records the log never got: the log restarts at 16.
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 16).unwrap();
    assert_eq!(wal.append(&payload(16)).unwrap(), 16);
    wal.flush().unwrap();
    drop(wal);
    assert_records(&replay(dir.path(), 15, &opts).unwrap().records, 16..=16);
    assert!(matches!(
        replay(dir.path(), 0, &opts),
        Err(WalError::Corrupt { .. })
    ));

    // A torn tail must be cut by replay before the log is opened for appending.
    let frames = frames_on_disk(dir.path());
    let last = frames.last().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last.file)
        .unwrap()
        .set_len((last.offset + 3) as u64)
        .unwrap();
    assert!(matches!(
        Wal::open(fs(), dir.path(), opts.clone(), 16),
        Err(WalError::Corrupt { .. })
    ));
    let r = replay(dir.path(), 15, &opts).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.next_lsn, 16);
    Wal::open(fs(), dir.path(), opts, r.next_lsn).unwrap();
}

/// Which fault to inject.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Write,
    Sync,
    DirSync,
}

/// Appenders on several threads (each a runtime with several tasks) append and wait until the
/// WAL fails; returns the acknowledged records and the number of failed waits.
fn run_until_poisoned(fault: Fault) {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new();
    // Small segments so that rotations (and their directory fsyncs) happen.
    let opts = options(2000);
    let wal = Wal::open(Arc::new(storage.clone()), dir.path(), opts.clone(), 1).unwrap();
    match fault {
        Fault::Write => storage.fail_write_at(Some(storage.writes() + 12)),
        Fault::Sync => storage.fail_sync_at(Some(storage.syncs() + 12)),
        Fault::DirSync => storage.fail_dir_sync_at(Some(storage.dir_syncs() + 3)),
    }
    let acked = Mutex::new(Vec::<(Lsn, Vec<u8>)>::new());
    let failures = Mutex::new(Vec::<WalError>::new());
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (wal, acked, failures) = (&wal, &acked, &failures);
            scope.spawn(move || {
                runtime().block_on(join_all((0..16).map(|task| async move {
                    for i in 0..400 {
                        let body = format!("t{thread}-k{task}-i{i}").into_bytes();
                        let result = match wal.append(&body) {
                            Ok(lsn) => wal.wait_durable(lsn).await.map(|()| lsn),
                            Err(e) => Err(e),
                        };
                        match result {
                            Ok(lsn) => acked.lock().unwrap().push((lsn, body)),
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                return;
                            }
                        }
                        // Let the other tasks of this thread append too.
                        tokio::task::yield_now().await;
                    }
                })));
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    let failures = failures.into_inner().unwrap();
    assert!(
        !acked.is_empty(),
        "{fault:?}: nothing acknowledged before the fault"
    );
    assert_eq!(
        failures.len(),
        64,
        "{fault:?}: every task ends with an error"
    );
    for e in &failures {
        assert!(matches!(e, WalError::Poisoned { .. }), "{fault:?}: {e}");
    }
    assert!(matches!(wal.append(b"x"), Err(WalError::Poisoned { .. })));
    assert!(matches!(wal.flush(), Err(WalError::Poisoned { .. })));
    let durable = wal.durable_lsn();
    drop(wal);

    // Every acknowledged record is on disk, with its payload.
    let r = replay(dir.path(), 0, &opts).unwrap();
    let on_disk: BTreeMap<Lsn, Vec<u8>> = r
        .records
        .into_iter()
        .map(|rec| (rec.lsn, rec.payload.to_vec()))
        .collect();
    for (lsn, body) in &acked {
        assert!(*lsn <= durable);
        assert_eq!(
            on_disk.get(lsn),
            Some(body),
            "{fault:?}: acked LSN {lsn} lost"
        );
    }
}

#[test]
fn write_failure_poisons_and_loses_no_acknowledged_record() {
    run_until_poisoned(Fault::Write);
}

#[test]
fn fsync_failure_poisons_and_loses_no_acknowledged_record() {
    run_until_poisoned(Fault::Sync);
}

#[test]
fn directory_fsync_failure_at_rotation_poisons_and_loses_no_acknowledged_record() {
    run_until_poisoned(Fault::DirSync);
}

#[test]
fn group_commit_covers_all_waiting_appenders_with_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new();
    let wal = Wal::open(Arc::new(storage.clone()), dir.path(), options(1 << 20), 1).unwrap();
    // The segment and the spare were pre-allocated by the open: the test's records fit in the
    // segment, so no other fsync happens from here.
    let syncs_at_start = storage.syncs();

    // The writer takes the first record and is held inside its fsync.
    let held = storage.hold_syncs();
    let first = wal.append(b"first").unwrap();
    storage.wait_for_held_syncs(1);
    assert!(wal.wait_durable(first).now_or_never().is_none());
    assert_eq!(wal.durable_lsn(), 0, "acknowledged before its fsync");

    // Meanwhile 256 records arrive from 8 threads.
    let lsns: Vec<Lsn> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let wal = &wal;
                scope.spawn(move || {
                    (0..32)
                        .map(|i| wal.append(format!("{t}-{i}").as_bytes()).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(lsns.len(), 256);
    drop(held);
    let results = runtime().block_on(join_all(
        std::iter::once(first)
            .chain(lsns)
            .map(|lsn| wal.wait_durable(lsn)),
    ));
    assert!(results.iter().all(Result::is_ok));
    // One fsync for the first record, one for the 256 that queued behind it.
    assert_eq!(storage.syncs() - syncs_at_start, 2);
    let stats = wal.stats();
    assert_eq!((stats.batches, stats.records, stats.fsyncs), (2, 257, 2));
}

#[test]
fn interval_and_never_acknowledge_after_the_write_and_fsync_on_flush() {
    for mode in [FsyncMode::Interval, FsyncMode::Never] {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let opts = WalOptions {
            fsync: mode,
            // Far longer than the test: the interval fsync cannot happen by itself here.
            fsync_interval_ms: 3_600_000,
            ..options(1 << 20)
        };
        let wal = Wal::open(Arc::new(storage.clone()), dir.path(), opts.clone(), 1).unwrap();
        // Those of pre-allocating the segment and the spare.
        let syncs_at_open = storage.syncs();
        let rt = runtime();
        for i in 1..=5 {
            let lsn = wal.append(&payload(i)).unwrap();
            rt.block_on(wal.wait_durable(lsn)).unwrap();
        }
        assert_eq!(storage.syncs(), syncs_at_open, "{mode}");
        assert_eq!(wal.durable_lsn(), 5);
        assert_eq!(wal.synced_lsn(), 0);
        // Already in the file (a killed process loses nothing), before any fsync.
        assert_records(&replay(dir.path(), 0, &opts).unwrap().records, 1..=5);
        wal.flush().unwrap();
        assert_eq!(storage.syncs(), syncs_at_open + 1, "{mode}");
        assert_eq!(wal.synced_lsn(), 5);
    }
}

#[test]
fn never_mode_fsyncs_each_closed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FaultyStorage::new();
    let opts = WalOptions {
        fsync: FsyncMode::Never,
        ..options(400)
    };
    let wal = Wal::open(Arc::new(storage.clone()), dir.path(), opts, 1).unwrap();
    let rt = runtime();
    for i in 1..=60 {
        let lsn = wal.append(&payload(i)).unwrap();
        rt.block_on(wal.wait_durable(lsn)).unwrap();
    }
    let segments = list_segments(&FsStorage::new(), dir.path()).unwrap().len() as u64;
    assert!(segments > 3);
    // One fsync of records per closed segment, none for the records of the open one.
    let stats = wal.stats();
    assert_eq!(
        (stats.rotations, stats.fsyncs),
        (segments - 1, segments - 1)
    );
    // Each segment's name made durable once (the spares are renamed, never fsynced by name).
    assert_eq!(storage.dir_syncs(), segments);
}

#[test]
fn rotate_closes_the_active_segment_so_a_cut_can_drop_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1 << 20);
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 1).unwrap();
    for i in 1..=10 {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
    }
    // Without a rotation the only segment is active and no cut removes it.
    assert!(wal.cut_before(11).unwrap().is_empty());
    wal.rotate().unwrap();
    let segments = list_segments(fs().as_ref(), dir.path()).unwrap();
    assert_eq!(
        segments.iter().map(|s| s.first_lsn).collect::<Vec<_>>(),
        vec![1, 11]
    );
    // Rotating implies a flush: everything appended before is durable.
    assert_eq!(wal.synced_lsn(), 10);
    let removed = wal.cut_before(11).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(wal.append(&payload(11)).unwrap(), 11);
    runtime().block_on(wal.wait_durable(11)).unwrap();
    drop(wal);
    let replayed = replay(dir.path(), 10, &opts).unwrap();
    assert_records(&replayed.records, 11..=11);
    // A rotation of an empty segment creates nothing.
    let wal = Wal::open(fs(), dir.path(), opts, replayed.next_lsn).unwrap();
    wal.rotate().unwrap();
    wal.rotate().unwrap();
    assert_eq!(list_segments(fs().as_ref(), dir.path()).unwrap().len(), 2);
}

/// What replay found in a copy whose last frame was torn, checked, and the log continued
/// twice after it: the next append gets the torn record's LSN, and after each reopen exactly
/// the acknowledged records are there, nothing of the torn one.
fn recover_and_continue(dir: &Path, opts: &WalOptions, torn: &Placed, what: &str) -> Replayed {
    let file = dir.join(torn.file.file_name().unwrap());
    let before = std::fs::read(&file).unwrap();
    let r = replay(dir, 0, opts).unwrap();
    assert_records(&r.records, 1..=torn.lsn - 1);
    assert_eq!(r.next_lsn, torn.lsn, "{what}");
    // Cut: from the torn frame on, only zeros; the file keeps its length.
    let after = std::fs::read(&file).unwrap();
    assert_eq!(after.len(), before.len(), "{what}");
    assert_eq!(after[..torn.offset], before[..torn.offset], "{what}");
    assert!(zeros(&after[torn.offset..]), "{what}: torn bytes left");

    let wal = Wal::open(fs(), dir, opts.clone(), r.next_lsn).unwrap();
    let again = b"written after the crash".to_vec();
    let lsn = wal.append(&again).unwrap();
    assert_eq!(lsn, torn.lsn, "{what}");
    runtime().block_on(wal.wait_durable(lsn)).unwrap();
    drop(wal);
    let reopened = replay(dir, 0, opts).unwrap();
    assert_eq!(reopened.truncation, None, "{what}");
    assert_records(&reopened.records[..reopened.records.len() - 1], 1..=lsn - 1);
    let last = reopened.records.last().unwrap();
    assert_eq!(
        (last.lsn, last.payload.as_ref()),
        (lsn, &again[..]),
        "{what}"
    );
    // The new frame went where the torn one was (right after the last valid frame, not at the
    // file's end), and zeros follow it.
    let placed = frames_on_disk(dir)
        .into_iter()
        .find(|f| f.lsn == lsn)
        .unwrap();
    assert_eq!(
        (placed.file, placed.offset),
        (file.clone(), torn.offset),
        "{what}"
    );
    let data = std::fs::read(&file).unwrap();
    assert!(zeros(&data[placed.offset + placed.len..]), "{what}");

    let wal = Wal::open(fs(), dir, opts.clone(), reopened.next_lsn).unwrap();
    assert_eq!(wal.append(&payload(lsn + 1)).unwrap(), lsn + 1);
    runtime().block_on(wal.wait_durable(lsn + 1)).unwrap();
    drop(wal);
    let twice = replay(dir, 0, opts).unwrap();
    assert_eq!(twice.truncation, None, "{what}");
    assert_eq!(twice.records.len() as u64, lsn + 1, "{what}");
    assert_eq!(twice.records[lsn as usize - 1].payload.as_ref(), &again[..]);
    assert_eq!(
        twice.records[lsn as usize].payload.as_ref(),
        &payload(lsn + 1)[..]
    );
    r
}

/// A crash while the last frame was written into a pre-allocated segment leaves its first k
/// bytes and zeros after them (the rest of the file was zeroed before the segment was used),
/// for every k from none of it to all but its last byte.
#[test]
fn a_crash_at_every_byte_of_the_last_frame_in_a_preallocated_segment_drops_only_it() {
    let original = tempfile::tempdir().unwrap();
    let opts = options(4096);
    write_log(original.path(), &opts, 6);
    let frames = frames_on_disk(original.path());
    let last = frames.last().unwrap().clone();
    assert_eq!(std::fs::metadata(&last.file).unwrap().len(), 4096);
    for k in 0..last.len {
        let copy = copy_dir(original.path());
        let file = in_copy(&copy, &last.file);
        let mut data = std::fs::read(&file).unwrap();
        data[last.offset + k..last.offset + last.len].fill(0);
        std::fs::write(&file, &data).unwrap();
        let what = format!("{k} of {} bytes", last.len);
        let r = recover_and_continue(copy.path(), &opts, &last, &what);
        let written = &data[last.offset..last.offset + k];
        match &r.truncation {
            // Nothing of the frame reached the disk (or only zero bytes of it): a clean end.
            None => assert!(zeros(written), "{what}: torn bytes not reported"),
            Some(t) => {
                assert_eq!(
                    (t.file.clone(), t.offset),
                    (file, last.offset as u64),
                    "{what}"
                );
                let garbage = written.iter().rposition(|b| *b != 0).unwrap() + 1;
                assert_eq!(t.dropped_bytes, garbage as u64, "{what}");
            }
        }
    }
}

/// The same crash, but the bytes after the cut are not zeros (stale blocks, a write that
/// reached the disk out of order): still a torn tail, cut up to the last byte that is not zero.
#[test]
fn a_torn_last_frame_followed_by_garbage_instead_of_zeros_is_cut() {
    let original = tempfile::tempdir().unwrap();
    let opts = options(4096);
    write_log(original.path(), &opts, 6);
    let last = frames_on_disk(original.path()).last().unwrap().clone();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for k in 0..last.len {
        let copy = copy_dir(original.path());
        let file = in_copy(&copy, &last.file);
        let mut data = std::fs::read(&file).unwrap();
        let garbage_end = last.offset + last.len + 37;
        for byte in &mut data[last.offset + k..garbage_end] {
            *byte = (rng.next() % 255 + 1) as u8;
        }
        std::fs::write(&file, &data).unwrap();
        let what = format!("{k} bytes, then garbage");
        let r = recover_and_continue(copy.path(), &opts, &last, &what);
        let t = r.truncation.expect("garbage is reported");
        assert_eq!((t.file, t.offset), (file, last.offset as u64), "{what}");
        assert_eq!(
            t.dropped_bytes,
            (garbage_end - last.offset) as u64,
            "{what}"
        );
    }
}

/// Zeros after the last frame are where the log ends: replay changes nothing, writes nothing,
/// fsyncs nothing.
#[test]
fn a_zeroed_tail_after_valid_frames_is_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1 << 16);
    write_log(dir.path(), &opts, 20);
    let segment = frames_on_disk(dir.path()).last().unwrap().file.clone();
    let before = std::fs::read(&segment).unwrap();
    assert_eq!(before.len(), 1 << 16);
    let storage = FaultyStorage::new();
    let mut replay = read_from(Arc::new(storage.clone()), dir.path(), 0, &opts).unwrap();
    let records = replay.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
    assert_records(&records, 1..=20);
    assert_eq!(replay.truncation(), None);
    assert_eq!(replay.next_lsn(), 21);
    assert_eq!(
        (storage.writes(), storage.syncs(), storage.dir_syncs()),
        (0, 0, 0)
    );
    assert_eq!(std::fs::read(&segment).unwrap(), before);
}

/// Zeros in place of a record (a lost block) with valid records after them are damage, never
/// a clean end: in the last segment and in an earlier one.
#[test]
fn zeros_in_place_of_a_record_followed_by_valid_records_are_corruption() {
    let original = tempfile::tempdir().unwrap();
    let opts = options(600);
    write_log(original.path(), &opts, 40);
    let frames = frames_on_disk(original.path());
    let last_file = frames.last().unwrap().file.clone();
    let in_last: Vec<&Placed> = frames.iter().filter(|p| p.file == last_file).collect();
    assert!(in_last.len() >= 3);
    for victim in [in_last[1], &frames[2]] {
        let copy = copy_dir(original.path());
        let file = in_copy(&copy, &victim.file);
        let mut data = std::fs::read(&file).unwrap();
        data[victim.offset..victim.offset + victim.len].fill(0);
        std::fs::write(&file, &data).unwrap();
        match replay(copy.path(), 0, &opts) {
            Err(WalError::Corrupt {
                file: f, offset, ..
            }) => {
                assert_eq!((f, offset), (file.clone(), victim.offset as u64));
            }
            other => panic!("LSN {}: {:?}", victim.lsn, other.map(|r| r.records.len())),
        }
        // Nothing was changed by the refused start.
        assert_eq!(std::fs::read(&file).unwrap(), data);
    }
}

/// A crash right after a segment file was pre-allocated, before anything else reached it:
/// a file of zeros, which holds no records, alone or after earlier segments.
#[test]
fn a_segment_file_of_zeros_holds_no_records_and_the_log_goes_on_in_it() {
    use tokend::wal::segment::{encode_header, segment_file_name};
    let opts = options(4096);
    // Alone.
    let dir = tempfile::tempdir().unwrap();
    let only = dir.path().join(segment_file_name(1));
    std::fs::write(&only, vec![0u8; 4096]).unwrap();
    let r = replay(dir.path(), 0, &opts).unwrap();
    assert!(r.records.is_empty());
    assert_eq!((r.truncation, r.next_lsn), (None, 1));
    assert_eq!(std::fs::read(&only).unwrap(), vec![0u8; 4096]);
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 1).unwrap();
    assert_eq!(wal.append(&payload(1)).unwrap(), 1);
    wal.flush().unwrap();
    drop(wal);
    assert_records(&replay(dir.path(), 0, &opts).unwrap().records, 1..=1);
    assert_eq!(
        &std::fs::read(&only).unwrap()[..HEADER_BYTES],
        &encode_header(1)
    );

    // After earlier segments.
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &opts, 30);
    let next = list_segments(fs().as_ref(), dir.path()).unwrap().len();
    let zeroed = dir.path().join(segment_file_name(31));
    std::fs::write(&zeroed, vec![0u8; 4096]).unwrap();
    let r = replay(dir.path(), 0, &opts).unwrap();
    assert_records(&r.records, 1..=30);
    assert_eq!((r.truncation, r.next_lsn), (None, 31));
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 31).unwrap();
    assert_eq!(wal.append(&payload(31)).unwrap(), 31);
    wal.flush().unwrap();
    drop(wal);
    assert_records(&replay(dir.path(), 0, &opts).unwrap().records, 1..=31);
    assert_eq!(
        list_segments(fs().as_ref(), dir.path()).unwrap().len(),
        next + 1
    );
}

/// Segments as builds before pre-allocation left them: a header (or, older still, none) and
/// frames up to the end of the file, the last one possibly torn. They read as before, the last
/// headed one is continued in place, and the next segment is pre-allocated.
#[test]
fn segments_written_before_preallocation_still_read_and_continue() {
    use tokend::wal::segment::{encode_header, segment_file_name};
    let opts = options(1 << 16);
    let frames_of = |lsns: std::ops::RangeInclusive<Lsn>| {
        let mut out = Vec::new();
        for lsn in lsns {
            let body = payload(lsn);
            frame::encode_into(&mut out, lsn, &body, &frame::PayloadCrc::new(&body));
        }
        out
    };
    let dir = tempfile::tempdir().unwrap();
    // Format version 0 (no header), then version 1 ending in half a frame.
    std::fs::write(dir.path().join(segment_file_name(1)), frames_of(1..=10)).unwrap();
    let last = dir.path().join(segment_file_name(11));
    let mut old = encode_header(11).to_vec();
    old.extend_from_slice(&frames_of(11..=20));
    let whole = old.len();
    old.extend_from_slice(&frames_of(21..=21)[..9]);
    std::fs::write(&last, &old).unwrap();

    let r = replay(dir.path(), 0, &opts).unwrap();
    assert_records(&r.records, 1..=20);
    let t = r.truncation.expect("the torn frame is reported");
    let garbage = old[whole..].iter().rposition(|b| *b != 0).unwrap() + 1;
    assert_eq!(
        (t.file, t.offset, t.dropped_bytes),
        (last.clone(), whole as u64, garbage as u64)
    );
    let cut = std::fs::read(&last).unwrap();
    assert_eq!(cut.len(), old.len());
    assert!(zeros(&cut[whole..]));

    // Continued in place, over the zeroed bytes and past the end of the file, then rotated
    // into a pre-allocated segment.
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 21).unwrap();
    for i in 21..=25 {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
    }
    wal.rotate().unwrap();
    assert_eq!(wal.append(&payload(26)).unwrap(), 26);
    wal.flush().unwrap();
    drop(wal);
    assert_records(&replay(dir.path(), 0, &opts).unwrap().records, 1..=26);
    let segments = list_segments(fs().as_ref(), dir.path()).unwrap();
    assert_eq!(
        segments.iter().map(|s| s.first_lsn).collect::<Vec<_>>(),
        vec![1, 11, 26]
    );
    assert_eq!(std::fs::metadata(&segments[2].path).unwrap().len(), 1 << 16);
    assert!(std::fs::metadata(&last).unwrap().len() < 1 << 16);
}

/// The point of pre-allocation: once a segment is in use, appends only overwrite zeros, so the
/// file's size and its allocated blocks never change, and an fsync has no metadata to commit.
#[test]
fn appends_within_a_segment_change_neither_its_length_nor_its_blocks() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1 << 20);
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 1).unwrap();
    let segment = list_segments(fs().as_ref(), dir.path()).unwrap()[0]
        .path
        .clone();
    let spare = dir.path().join(SPARE_FILE_NAME);
    let at_open = std::fs::metadata(&segment).unwrap();
    assert_eq!(at_open.len(), 1 << 20);
    // Every block written: no hole, no extent left to allocate on the first write into it.
    assert!(
        at_open.blocks() * 512 >= 1 << 20,
        "{} blocks",
        at_open.blocks()
    );
    assert_eq!(std::fs::metadata(&spare).unwrap().len(), 1 << 20);
    let rt = runtime();
    let mut written = 0;
    for i in 1..=2000 {
        let lsn = wal.append(&payload(i)).unwrap();
        rt.block_on(wal.wait_durable(lsn)).unwrap();
        written += FRAME_HEADER_BYTES + payload(i).len();
        if i % 500 == 0 {
            let now = std::fs::metadata(&segment).unwrap();
            assert_eq!((now.len(), now.blocks()), (at_open.len(), at_open.blocks()));
        }
    }
    assert!(written > 100_000);
    assert_eq!(wal.stats().rotations, 0);
    assert_eq!(wal.stats().fsyncs, 2000);
    drop(wal);
    // Reopened, the log goes on right after its last frame, in the same segment.
    let r = replay(dir.path(), 0, &opts).unwrap();
    assert_records(&r.records, 1..=2000);
    let wal = Wal::open(fs(), dir.path(), opts.clone(), r.next_lsn).unwrap();
    for i in 2001..=2100 {
        let lsn = wal.append(&payload(i)).unwrap();
        rt.block_on(wal.wait_durable(lsn)).unwrap();
    }
    assert_eq!(wal.stats().rotations, 0);
    drop(wal);
    let now = std::fs::metadata(&segment).unwrap();
    assert_eq!((now.len(), now.blocks()), (at_open.len(), at_open.blocks()));
    let frames = frames_on_disk(dir.path());
    assert_eq!(frames.len(), 2100);
    assert!(frames.iter().all(|f| f.file == segment));
    assert_records(&replay(dir.path(), 0, &opts).unwrap().records, 1..=2100);
}

/// The next segment is prepared ahead: after a rotation a new spare takes the place of the one
/// installed, and a spare left by a closed WAL is the next open's (reused, not written again).
#[test]
fn rotations_install_the_spare_and_a_new_one_is_prepared() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(8192);
    let spare = dir.path().join(SPARE_FILE_NAME);
    let wal = Wal::open(fs(), dir.path(), opts.clone(), 1).unwrap();
    let first_spare = std::fs::metadata(&spare).unwrap().ino();
    assert_eq!(wal.append(&payload(1)).unwrap(), 1);
    wal.rotate().unwrap();
    let segments = list_segments(fs().as_ref(), dir.path()).unwrap();
    assert_eq!(segments.len(), 2);
    // The spare became the new segment.
    assert_eq!(
        std::fs::metadata(&segments[1].path).unwrap().ino(),
        first_spare
    );
    // A new spare comes, whole.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = std::fs::metadata(&spare).map(|m| m.len() == 8192 && m.ino() != first_spare);
        if ready.unwrap_or(false) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no new spare");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for i in 2..=600 {
        assert_eq!(wal.append(&payload(i)).unwrap(), i);
    }
    wal.flush().unwrap();
    let stats = wal.stats();
    assert!(stats.rotations >= 4, "{stats:?}");
    drop(wal);
    let left = std::fs::metadata(&spare).unwrap();
    assert_eq!(left.len(), 8192);
    assert!(zeros(&std::fs::read(&spare).unwrap()));
    let r = replay(dir.path(), 0, &opts).unwrap();
    assert_records(&r.records, 1..=600);
    let wal = Wal::open(fs(), dir.path(), opts, r.next_lsn).unwrap();
    assert_eq!(std::fs::metadata(&spare).unwrap().ino(), left.ino());
    drop(wal);
}

/// Preparing the next segment can fail too: that poisons the WAL (nothing more is
/// acknowledged), the records acknowledged before are kept, and a restart goes on with the
/// spare as far as it got.
#[test]
fn a_failure_to_prepare_the_next_segment_poisons_the_wal() {
    for fault in [Fault::Write, Fault::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let storage = FaultyStorage::new();
        let opts = options(8192);
        let wal = Wal::open(Arc::new(storage.clone()), dir.path(), opts.clone(), 1).unwrap();
        for i in 1..=5 {
            assert_eq!(wal.append(&payload(i)).unwrap(), i);
        }
        wal.flush().unwrap();
        // The rotation writes and fsyncs the new segment's header, then the preparer starts
        // on the next spare: its first write, and its first fsync, are the ones after those.
        match fault {
            Fault::Write => storage.fail_write_at(Some(storage.writes() + 2)),
            _ => storage.fail_sync_at(Some(storage.syncs() + 2)),
        }
        // The rotation itself succeeds, unless the preparer fails before it is reported.
        match wal.rotate() {
            Ok(()) | Err(WalError::Poisoned { .. }) => {}
            Err(e) => panic!("{fault:?}: {e}"),
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while wal.check_writable().is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "{fault:?}: not poisoned"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let message = wal.check_writable().unwrap_err().to_string();
        assert!(message.contains("preparing the next segment"), "{message}");
        assert!(matches!(wal.append(b"x"), Err(WalError::Poisoned { .. })));
        // Nothing is acknowledged any more, not even a flush with nothing left to write.
        assert!(matches!(wal.flush(), Err(WalError::Poisoned { .. })));
        drop(wal);
        let r = replay(dir.path(), 0, &opts).unwrap();
        assert_records(&r.records, 1..=5);
        let wal = Wal::open(fs(), dir.path(), opts.clone(), r.next_lsn).unwrap();
        assert_eq!(wal.append(&payload(6)).unwrap(), 6);
        wal.flush().unwrap();
        drop(wal);
        assert_records(&replay(dir.path(), 0, &opts).unwrap().records, 1..=6);
    }
}
