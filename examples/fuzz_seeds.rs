//! Writes the seed inputs of every fuzz target (`tokend::fuzzing`) from
//! real bytes: the WAL segments and snapshot files of the data dirs under
//! `tests/fixtures/` (written by earlier builds, every format), their
//! frames, records and token sections, and request bodies of every route.
//!
//! ```sh
//! cargo run --example fuzz_seeds -- fuzz/seeds
//! ```
//!
//! writes `<out>/<target>/<name>` for each seed; see `docs/fuzzing.md`.

use bytes::Bytes;
use std::path::{Path, PathBuf};
use tokend::fuzzing::{request_body, snapshot_file, wal_segment};
use tokend::snapshot::file::SNAPSHOT_HEADER_BYTES;
use tokend::snapshot::image::SnapshotImage;
use tokend::wal::frame::{self, FRAME_HEADER_BYTES};
use tokend::wal::segment::{HEADER_BYTES, MAGIC};

/// The data dirs seeds are cut from.
const FIXTURES: &str = "tests/fixtures";

/// Request bodies of every route (by its index in `request_body::ROUTES`),
/// accepted and refused ones.
const BODIES: &[(u8, &str)] = &[
    (0, r#"{"name": "Acme", "liveness": "test"}"#),
    (0, r#"{"name": "", "liveness": "live", "extra": 1}"#),
    (
        1,
        r#"{"name": "pos", "scopes": ["token:create", "token:redeem", "token:read"]}"#,
    ),
    (1, r#"{"name": "all", "scopes": ["*", "*"]}"#),
    (
        2,
        r#"{"name": "Coffee", "description": "A cup", "issuer": "Cafe", "issuerImg": "https://x/i.png",
            "img": "https://x/c.png", "issuerWebsite": "https://x", "value": [{"currency": "NZD", "amount": "5.00"}],
            "merchants": ["m-1", "m-2"], "tokenExpiresAfter": 3600, "holdTtlSecsMax": 600, "voidWindowSecs": 86400,
            "dataSchema": {"type": "object", "required": ["pan"], "properties": {"pan": {"type": "string", "pattern": "^[0-9]{12,19}$"}}},
            "liveness": "test"}"#,
    ),
    (
        2,
        r#"{"name": "x", "value": [{"currency": "nzd", "amount": "05"}], "tokenExpiresAfter": 0}"#,
    ),
    (
        3,
        r#"{"collectionId": "0b7c7f0e-8f43-4a5e-9b5e-1f0c2d3e4f50", "type": "card", "description": "gift",
            "data": {"pan": "4242424242424242", "n": [1, 2.5, null, true]}, "metadata": {"colour": "red", "size": "L"},
            "encryption": {"cek": {"key": "k1", "alg": "AES"}, "kek": {"key": "k2"}},
            "activeFrom": "2026-01-17T18:00:23.000Z", "expiresAt": "2027-01-17T18:00:23+13:00",
            "idempotencyKey": "create-1", "liveness": "test",
            "children": [{"type": "bank", "expiresIn": 60}, {"metadata": {"k": "v"}}]}"#,
    ),
    (
        3,
        r#"{"collectionId": 5, "expiresAt": "2026-01-17", "expiresIn": 1.5, "metadata": {"k": 1}}"#,
    ),
    (
        4,
        r#"{"tokens": [{"collectionId": "0b7c7f0e-8f43-4a5e-9b5e-1f0c2d3e4f50", "expiresIn": 3600},
            {"collectionId": "0b7c7f0e-8f43-4a5e-9b5e-1f0c2d3e4f50", "data": {"a": "\u00e9"}, "idempotencyKey": "b-2"}]}"#,
    ),
    (4, r#"{"tokens": [], "x": 1, "a b": 2}"#),
    (4, r#"{"tokens": [{"colour": 1}, 2, "three"]}"#),
    (4, r#"[1, 2.0, {"b": 1}]"#),
    (5, r#"{"merchantId": "m-1", "idempotencyKey": "r-1"}"#),
    (5, ""),
    (
        6,
        r#"{"merchantId": "m-1", "idempotencyKey": "h-1", "ttlSecs": 300}"#,
    ),
    (6, r#"{"ttlSecs": 60.0}"#),
    (7, "{}"),
    (7, r#"{"a": 1}"#),
    (8, r#"{"reason": "returned", "idempotencyKey": "v-1"}"#),
    (9, r#"{"merchantId": "m-2"}"#),
    (
        10,
        r#"{"redemptions": [{"tokenId": "0b7c7f0e-8f43-4a5e-9b5e-1f0c2d3e4f51", "merchantId": "m-1", "idempotencyKey": "k"},
            {"tokenId": "nope"}]}"#,
    ),
    (10, r#"{"redemptions": []}"#),
];

fn main() {
    let Some(out) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds <out dir>");
        std::process::exit(2);
    };
    let mut seeds = Seeds { out, count: 0 };
    let mut dirs: Vec<PathBuf> = read_dir(Path::new(FIXTURES));
    dirs.retain(|d| d.is_dir());
    for dir in dirs {
        let name = dir
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let files = read_dir(&dir);
        let segments: Vec<(PathBuf, Vec<u8>)> = files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "log"))
            .map(|f| (f.clone(), read(f)))
            .collect();
        let mut history = Vec::new();
        for (path, segment) in &segments {
            let stem = format!("{name}-{}", stem(path));
            wal_seeds(&mut seeds, &stem, segment, &mut history);
        }
        if let [(_, first), (_, second), ..] = segments.as_slice() {
            let split = u16::try_from(first.len()).unwrap_or(u16::MAX);
            let mut input = vec![wal_segment::FLAG_TWO_SEGMENTS];
            input.extend_from_slice(&split.to_le_bytes());
            input.extend_from_slice(first);
            input.extend_from_slice(second);
            seeds.write("wal_segment", &format!("{name}-two"), &input);
        }
        seeds.write("log_record", &format!("{name}-history"), &history);
        for file in files
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "mpk"))
        {
            snapshot_seeds(&mut seeds, &format!("{name}-{}", stem(file)), &read(file));
        }
    }
    for (i, (route, body)) in BODIES.iter().enumerate() {
        for content_type in [0u8, 1] {
            let mut input = vec![route | (content_type << 4)];
            input.extend_from_slice(body.as_bytes());
            seeds.write(
                "request_body",
                &format!("{}-{i}-{content_type}", route_name(*route)),
                &input,
            );
        }
    }
    eprintln!("wrote {} seeds to {}", seeds.count, seeds.out.display());
}

/// Seeds from one WAL segment: the segment (as is, with CRCs fixed, torn),
/// its frames, and its records (appended to `history` too).
fn wal_seeds(seeds: &mut Seeds, stem: &str, segment: &[u8], history: &mut Vec<u8>) {
    for flags in [0, wal_segment::FLAG_FIX_CRCS] {
        seeds.write(
            "wal_segment",
            &format!("{stem}-{flags}"),
            &[&[flags], segment].concat(),
        );
    }
    let torn = &segment[..segment.len() - segment.len() / 3];
    seeds.write(
        "wal_segment",
        &format!("{stem}-torn"),
        &[&[0u8], torn].concat(),
    );
    // As a pre-allocated segment holds them: zeros after the frames (a clean end), after a torn
    // frame (a torn tail), and zeros with a stray byte far after them (garbage, not a clean end).
    let zeros = [0u8; 2048];
    seeds.write(
        "wal_segment",
        &format!("{stem}-prealloc"),
        &[&[0u8], segment, &zeros].concat(),
    );
    seeds.write(
        "wal_segment",
        &format!("{stem}-prealloc-torn"),
        &[&[0u8], torn, &zeros].concat(),
    );
    seeds.write(
        "wal_segment",
        &format!("{stem}-prealloc-stray"),
        &[&[0u8], segment, &zeros, &[0x5a], &zeros].concat(),
    );
    let start = if segment.starts_with(&MAGIC) {
        HEADER_BYTES
    } else {
        0
    };
    let frames = &segment[start..];
    for choice in [1u8, 2] {
        seeds.write(
            "wal_frame",
            &format!("{stem}-{choice}"),
            &[&[choice], frames].concat(),
        );
    }
    let mut rest = frames;
    let mut n = 0;
    while let Ok(decoded) = frame::decode(rest, usize::MAX) {
        let payload = decoded.payload;
        if n % 4 == 0 {
            seeds.write("log_record", &format!("{stem}-{n}"), &record_input(payload));
        }
        history.extend_from_slice(&record_input(payload));
        rest = &rest[FRAME_HEADER_BYTES + payload.len()..];
        n += 1;
    }
}

/// A record as the `log_record` target reads it: a 2-byte length, then it.
fn record_input(payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    [&len.to_le_bytes()[..], payload].concat()
}

/// Seeds from one snapshot file: the file, its payload, its sections.
fn snapshot_seeds(seeds: &mut Seeds, stem: &str, file: &[u8]) {
    seeds.write(
        "snapshot_file",
        &format!("{stem}-file"),
        &[&[0u8], file].concat(),
    );
    seeds.write(
        "snapshot_file",
        &format!("{stem}-file-image-shards"),
        &[&[snapshot_file::FLAG_IMAGE_SHARDS], file].concat(),
    );
    let version = file[8];
    let payload = &file[SNAPSHOT_HEADER_BYTES..];
    seeds.write(
        "snapshot_file",
        &format!("{stem}-payload"),
        &[&[snapshot_file::FLAG_PAYLOAD | (1 << 2), version], payload].concat(),
    );
    let image = match SnapshotImage::decode(&Bytes::copy_from_slice(payload), u32::from(version)) {
        Ok(image) => image,
        Err(e) => panic!("{stem}: {e}"),
    };
    let layout_bit = u8::from(version == 1);
    for (i, shard) in image.shards.iter().enumerate() {
        let count = u32::try_from(shard.token_count).unwrap_or(u32::MAX);
        let choice = layout_bit | ((i as u8 % 4) << 1);
        let input = [&[choice][..], &count.to_le_bytes(), &shard.section].concat();
        seeds.write("snapshot_section", &format!("{stem}-{i}"), &input);
    }
}

/// A short name for a route, for seed file names.
fn route_name(route: u8) -> String {
    request_body::ROUTES[usize::from(route)]
        .trim_start_matches("POST /api/")
        .replace(['/', '{', '}'], "_")
}

/// Where seeds go, and how many were written.
struct Seeds {
    /// The output directory.
    out: PathBuf,
    /// Seeds written.
    count: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, data: &[u8]) {
        let dir = self.out.join(target);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            panic!("{}: {e}", dir.display());
        }
        let path = dir.join(format!("seed-{name}"));
        if let Err(e) = std::fs::write(&path, data) {
            panic!("{}: {e}", path.display());
        }
        self.count += 1;
    }
}

fn read_dir(dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    paths
}

fn read(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(data) => data,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned())
}
