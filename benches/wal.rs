//! WAL group-commit throughput at 1, 16, 64 and 256 concurrent appenders (`FsyncMode::Always`,
//! each appender appends a 200-byte record and waits for it to be durable, in a loop), the
//! replay at start of a log whose last 64 MiB segment is almost all zeros (ending cleanly, or
//! in a torn record), and snapshot-file write and load of a 64 MiB payload.
//!
//! Files go to a temporary directory under `TOKEND_BENCH_DIR` (default: the system temporary
//! directory); fsync figures only mean something on a real disk, not on tmpfs. After each run
//! the records per commit fsync, fsyncs per batch, rotations and the rotations that waited for
//! a pre-allocated segment are printed on stderr.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use futures_util::future::join_all;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokend::snapshot::SnapshotFiles;
use tokend::storage::FsStorage;
use tokend::wal::frame::{encode_into, PayloadCrc};
use tokend::wal::segment::{encode_header, segment_file_name};
use tokend::wal::{read_from_read_only, FsyncMode, Wal, WalOptions};

/// Concurrent appenders measured.
const APPENDERS: [usize; 4] = [1, 16, 64, 256];
/// Size of each WAL record, about one redeem.
const RECORD_BYTES: usize = 200;
/// Size of the snapshot payload.
const SNAPSHOT_BYTES: usize = 64 << 20;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("TOKEND_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// Totals per appender count over all runs: (records, fsyncs, batches, rotations, rotations
/// that waited for their segment).
static TOTALS: Mutex<BTreeMap<usize, [u64; 5]>> = Mutex::new(BTreeMap::new());

/// Appends `records` records to `wal` from `appenders` concurrent tasks, each waiting for its
/// record to be durable before appending the next; returns the time taken.
fn run_appenders(wal: &Wal, appenders: usize, records: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let issued = AtomicU64::new(0);
    let payload = vec![0x5a_u8; RECORD_BYTES];
    let before = wal.stats();
    let start = Instant::now();
    runtime.block_on(join_all((0..appenders).map(|_| async {
        while issued.fetch_add(1, Ordering::Relaxed) < records {
            let lsn = wal.append(&payload).unwrap();
            wal.wait_durable(lsn).await.unwrap();
        }
    })));
    let elapsed = start.elapsed();
    // The writer's own fsyncs (commits, closing a segment), not those of preparing segments.
    let after = wal.stats();
    let mut totals = TOTALS.lock();
    let entry = totals.entry(appenders).or_default();
    for (total, n) in entry.iter_mut().zip([
        after.records - before.records,
        after.fsyncs - before.fsyncs,
        after.batches - before.batches,
        after.rotations - before.rotations,
        after.spare_waits - before.spare_waits,
    ]) {
        *total += n;
    }
    elapsed
}

/// One WAL for every run, as a server has: opening one (which pre-allocates two segments) is
/// not what is measured, and would skew criterion's choice of iteration counts; segments fill
/// and rotate as the runs go on, their successors prepared meanwhile.
fn wal_group_commit(c: &mut Criterion) {
    let dir = bench_dir();
    let options = WalOptions {
        fsync: FsyncMode::Always,
        ..WalOptions::default()
    };
    let wal = Wal::open(Arc::new(FsStorage::new()), dir.path(), options, 1).unwrap();
    let mut group = c.benchmark_group("wal_append_always");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(1));
    for appenders in APPENDERS {
        group.bench_with_input(
            BenchmarkId::from_parameter(appenders),
            &appenders,
            |b, &appenders| b.iter_custom(|records| run_appenders(&wal, appenders, records)),
        );
    }
    group.finish();
    drop(wal);
    for (appenders, [records, fsyncs, batches, rotations, waits]) in TOTALS.lock().iter() {
        eprintln!(
            "wal_append_always/{appenders}: {records} records, {fsyncs} fsyncs, {batches} \
             batches: {:.1} records per fsync, {:.2} fsyncs per batch; {rotations} rotations, \
             {waits} waited for their segment",
            *records as f64 / (*fsyncs).max(1) as f64,
            *fsyncs as f64 / (*batches).max(1) as f64,
        );
    }
}

/// Replay at start of a log whose only segment is pre-allocated (64 MiB) and holds 2 000
/// records of 200 bytes then zeros: read, scanned and replayed read-only, as `tokend inspect`
/// and a start do, with a clean end and with the last record torn (its second half zeros,
/// then the search for a later valid record through the zeros).
fn wal_replay_zero_tail(c: &mut Criterion) {
    const SEGMENT_BYTES: usize = 64 << 20;
    const RECORDS: u64 = 2_000;
    let options = WalOptions::default();
    assert_eq!(options.segment_bytes_max, SEGMENT_BYTES as u64);
    let mut segment = encode_header(1).to_vec();
    let payload = vec![0x5a_u8; RECORD_BYTES];
    let mut last = 0;
    for lsn in 1..=RECORDS {
        last = segment.len();
        encode_into(&mut segment, lsn, &payload, &PayloadCrc::new(&payload));
    }
    let frames_end = segment.len();
    segment.resize(SEGMENT_BYTES, 0);
    let clean = bench_dir();
    std::fs::write(clean.path().join(segment_file_name(1)), &segment).unwrap();
    let torn = bench_dir();
    segment[last + (frames_end - last) / 2..frames_end].fill(0);
    std::fs::write(torn.path().join(segment_file_name(1)), &segment).unwrap();
    let mut group = c.benchmark_group("wal_replay_zero_tail_64MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    for (name, dir, replayed) in [("clean", &clean, RECORDS), ("torn", &torn, RECORDS - 1)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let storage = Arc::new(FsStorage::new());
                let replay = read_from_read_only(storage, dir.path(), 0, &options).unwrap();
                let n = replay.collect::<Result<Vec<_>, _>>().unwrap().len() as u64;
                assert_eq!(n, replayed);
            })
        });
    }
    group.finish();
}

fn snapshot_write_load(c: &mut Criterion) {
    let dir = bench_dir();
    let store = SnapshotFiles::new(Arc::new(FsStorage::new()), dir.path());
    let payload: Vec<u8> = (0..SNAPSHOT_BYTES).map(|i| (i % 251) as u8).collect();
    let mut group = c.benchmark_group("snapshot_file_64MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(SNAPSHOT_BYTES as u64));
    let mut lsn = 0;
    group.bench_function("write", |b| {
        b.iter(|| {
            lsn += 1;
            store.write(lsn, &payload).unwrap()
        })
    });
    group.bench_function("load", |b| {
        b.iter(|| store.load_newest_valid().unwrap().unwrap())
    });
    group.finish();
}

criterion_group!(
    benches,
    wal_group_commit,
    wal_replay_zero_tail,
    snapshot_write_load
);
criterion_main!(benches);
