//! The tokens a run redeems: handed out once each, with a count of the
//! successful (non-replayed) redeems each one got.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Keys of the three metadata pairs every created token carries
/// (8 characters each, as in the issue's memory target).
const METADATA_KEYS: [&str; 3] = ["region01", "channel2", "campaign"];

/// Appends the JSON body of token number `i`: its collection and three
/// 8-character metadata pairs; with `data`, a card-like `data` object and
/// `encryption` metadata too (what a data key seals), else no data.
pub fn token_body(out: &mut String, collection: &str, i: u64, data: bool) {
    if data {
        let _ = write!(
            out,
            r#"{{"collectionId":"{collection}","data":{{"number":"4000{i:012}","expMonth":12,"expYear":2030}},"encryption":{{"cek":{{"key":"cek-{i:08x}","alg":"AES"}}}},"#
        );
    } else {
        out.push_str(&format!(r#"{{"collectionId":"{collection}","#));
    }
    let _ = write!(
        out,
        r#""metadata":{{"{}":"{:08x}","{}":"{:08x}","{}":"{:08x}"}}}}"#,
        METADATA_KEYS[0],
        i.wrapping_mul(3) & 0xffff_ffff,
        METADATA_KEYS[1],
        i.wrapping_mul(3).wrapping_add(1) & 0xffff_ffff,
        METADATA_KEYS[2],
        i.wrapping_mul(3).wrapping_add(2) & 0xffff_ffff,
    );
}

/// Pre-created tokens (or numbered keys), each handed out at most once.
pub struct TokenPool {
    /// Token ids, in creation order; empty for a numbered pool.
    ids: Vec<String>,
    /// Number of tokens (of ids, or of numbers of a numbered pool).
    len: usize,
    /// Index of the next token to hand out.
    next: AtomicUsize,
    /// Per token: 200 answers without `Idempotent-Replayed` (saturating).
    wins: Vec<AtomicU8>,
    /// 200 answers with `Idempotent-Replayed: true`.
    replayed: AtomicU64,
    /// The hold placed on each token that got one (`hold-capture`), by
    /// token.
    holds: Mutex<HashMap<usize, Box<str>>>,
}

impl TokenPool {
    /// A pool of these ids.
    pub fn new(ids: Vec<String>) -> Self {
        let len = ids.len();
        let wins = ids.iter().map(|_| AtomicU8::new(0)).collect();
        Self {
            ids,
            len,
            next: AtomicUsize::new(0),
            wins,
            replayed: AtomicU64::new(0),
            holds: Mutex::new(HashMap::new()),
        }
    }

    /// A pool of `len` tokens known by number only (`0..len`): the keys of
    /// the Redis comparison, whose names follow from their numbers.
    pub fn numbered(len: usize) -> Self {
        Self {
            ids: Vec::new(),
            len,
            next: AtomicUsize::new(0),
            wins: (0..len).map(|_| AtomicU8::new(0)).collect(),
            replayed: AtomicU64::new(0),
            holds: Mutex::new(HashMap::new()),
        }
    }

    /// The next token never handed out before, or `None` once all were.
    pub fn take(&self) -> Option<usize> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.len).then_some(i)
    }

    /// Up to `n` consecutive tokens never handed out before: the first and
    /// how many (fewer than `n` only at the end of the pool), or `None` once
    /// all were.
    pub fn take_many(&self, n: usize) -> Option<(usize, usize)> {
        let i = self.next.fetch_add(n, Ordering::Relaxed);
        (i < self.len).then(|| (i, n.min(self.len - i)))
    }

    /// Tokens handed out so far.
    pub fn taken(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.len)
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pool has no tokens.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Id of token `i` (empty in a numbered pool).
    pub fn id(&self, i: usize) -> &str {
        self.ids.get(i).map_or("", String::as_str)
    }

    /// Records a 200 answer to a redeem of token `i`.
    pub fn record_ok(&self, i: usize, replayed: bool) {
        if replayed {
            self.replayed.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self.wins[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(1))
            });
        }
    }

    /// Records the id of the hold placed on token `i`.
    pub fn record_hold(&self, i: usize, hold_id: &str) {
        if let Ok(mut holds) = self.holds.lock() {
            holds.insert(i, hold_id.into());
        }
    }

    /// The id of the hold placed on token `i`, if one was.
    pub fn hold(&self, i: usize) -> Option<Box<str>> {
        self.holds.lock().ok()?.get(&i).cloned()
    }

    /// Non-replayed 200s of token `i`.
    pub fn wins(&self, i: usize) -> u8 {
        self.wins[i].load(Ordering::Relaxed)
    }

    /// Replayed 200s in total.
    pub fn replayed(&self) -> u64 {
        self.replayed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_many_hands_out_consecutive_tokens_once() {
        let pool = TokenPool::numbered(250);
        assert_eq!(pool.take_many(100), Some((0, 100)));
        assert_eq!(pool.take(), Some(100));
        assert_eq!(pool.take_many(100), Some((101, 100)));
        // The end of the pool: what is left, then nothing.
        assert_eq!(pool.take_many(100), Some((201, 49)));
        assert_eq!(pool.take_many(100), None);
        assert_eq!(pool.take(), None);
        assert_eq!(pool.taken(), 250);
    }

    #[test]
    fn remembers_the_hold_of_each_token() {
        let pool = TokenPool::numbered(3);
        pool.record_hold(1, "h-1");
        assert_eq!(pool.hold(1).as_deref(), Some("h-1"));
        assert_eq!(pool.hold(0), None);
    }
}
