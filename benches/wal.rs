//! WAL group-commit throughput at 1, 16, 64 and 256 concurrent appenders (`FsyncMode::Always`,
//! each appender appends a 200-byte record and waits for it to be durable, in a loop), and
//! snapshot-file write and load of a 64 MiB payload.
//!
//! Files go to a temporary directory under `TOKEND_BENCH_DIR` (default: the system temporary
//! directory); fsync figures only mean something on a real disk, not on tmpfs. After each run
//! the records per fsync and fsyncs per batch are printed on stderr.

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
use tokend::storage::{FaultyStorage, FsStorage};
use tokend::wal::{FsyncMode, Wal, WalOptions};

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

/// Totals per appender count over all runs: (records, fsyncs, batches).
static TOTALS: Mutex<BTreeMap<usize, (u64, u64, u64)>> = Mutex::new(BTreeMap::new());

/// Appends `records` records from `appenders` concurrent tasks, each waiting for its record to
/// be durable before appending the next; returns the time taken.
fn run_appenders(appenders: usize, records: u64) -> Duration {
    let dir = bench_dir();
    // FaultyStorage with no fault armed: the real file system, with fsyncs counted.
    let storage = FaultyStorage::new();
    let options = WalOptions {
        fsync: FsyncMode::Always,
        ..WalOptions::default()
    };
    let wal = Wal::open(Arc::new(storage.clone()), dir.path(), options, 1).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let issued = AtomicU64::new(0);
    let payload = vec![0x5a_u8; RECORD_BYTES];
    let syncs_before = storage.syncs();
    let start = Instant::now();
    runtime.block_on(join_all((0..appenders).map(|_| async {
        while issued.fetch_add(1, Ordering::Relaxed) < records {
            let lsn = wal.append(&payload).unwrap();
            wal.wait_durable(lsn).await.unwrap();
        }
    })));
    let elapsed = start.elapsed();
    let stats = wal.stats();
    let mut totals = TOTALS.lock();
    let entry = totals.entry(appenders).or_default();
    entry.0 += stats.records;
    entry.1 += storage.syncs() - syncs_before;
    entry.2 += stats.batches;
    elapsed
}

fn wal_group_commit(c: &mut Criterion) {
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
            |b, &appenders| b.iter_custom(|records| run_appenders(appenders, records)),
        );
    }
    group.finish();
    for (appenders, (records, fsyncs, batches)) in TOTALS.lock().iter() {
        eprintln!(
            "wal_append_always/{appenders}: {records} records, {fsyncs} fsyncs, {batches} \
             batches: {:.1} records per fsync, {:.2} fsyncs per batch",
            *records as f64 / (*fsyncs).max(1) as f64,
            *fsyncs as f64 / (*batches).max(1) as f64,
        );
    }
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

criterion_group!(benches, wal_group_commit, snapshot_write_load);
criterion_main!(benches);
