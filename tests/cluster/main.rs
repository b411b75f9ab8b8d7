//! The cluster suite: see `support`.
