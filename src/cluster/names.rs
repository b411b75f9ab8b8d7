//! The names a cluster uses in NATS: one stream for every log, one subject
//! per shard and one for the catalog, key-value buckets for the shard map,
//! the nodes and the cluster's settings, and request subjects (outside the
//! stream) for forwarding.

/// The names of one cluster, derived from its name.
#[derive(Debug, Clone)]
pub struct Names {
    /// The cluster name (validated: `[a-z0-9_-]{1,32}`).
    cluster: String,
}

/// Longest cluster name: it is part of every subject and bucket name.
pub const CLUSTER_NAME_CHARS_MAX: usize = 32;

impl Names {
    /// The names of cluster `cluster`; `Err` says what is wrong with it.
    pub fn new(cluster: &str) -> Result<Self, String> {
        let valid = !cluster.is_empty()
            && cluster.len() <= CLUSTER_NAME_CHARS_MAX
            && cluster
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid {
            return Err(format!(
                "cluster name {cluster:?} must be 1 to {CLUSTER_NAME_CHARS_MAX} characters of a-z, 0-9, - and _"
            ));
        }
        Ok(Self {
            cluster: cluster.to_owned(),
        })
    }

    /// The cluster name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The stream holding every log of the cluster.
    pub fn stream(&self) -> String {
        format!(
            "TOKEND_{}",
            self.cluster.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// The subjects of that stream.
    pub fn stream_subjects(&self) -> String {
        format!("tokend.{}.log.>", self.cluster)
    }

    /// Shard `shard`'s log.
    pub fn shard_subject(&self, shard: usize) -> String {
        format!("tokend.{}.log.shard.{shard}", self.cluster)
    }

    /// The catalog's log.
    pub fn catalog_subject(&self) -> String {
        format!("tokend.{}.log.catalog", self.cluster)
    }

    /// Where requests for shard `shard` go (not part of the stream).
    pub fn rpc_subject(&self, shard: usize) -> String {
        format!("tokend.{}.rpc.shard.{shard}", self.cluster)
    }

    /// The bucket of settings fixed when the cluster is created.
    pub fn meta_bucket(&self) -> String {
        format!("tokend_{}_meta", self.cluster)
    }

    /// The shard map: shard → owner, epoch.
    pub fn owners_bucket(&self) -> String {
        format!("tokend_{}_owners", self.cluster)
    }

    /// The object store of shard snapshots.
    pub fn snapshots_bucket(&self) -> String {
        format!("tokend_{}_snapshots", self.cluster)
    }

    /// The live nodes.
    pub fn nodes_bucket(&self) -> String {
        format!("tokend_{}_nodes", self.cluster)
    }

    /// The shard map key of `shard`.
    pub fn owner_key(shard: usize) -> String {
        format!("shard-{shard}")
    }

    /// The shard of a shard map key.
    pub fn shard_of_key(key: &str) -> Option<usize> {
        key.strip_prefix("shard-")?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_a_checked_cluster_name() {
        let names = Names::new("prod-eu_1").unwrap();
        assert_eq!(names.stream(), "TOKEND_PROD_EU_1");
        assert_eq!(names.shard_subject(7), "tokend.prod-eu_1.log.shard.7");
        assert!(names.rpc_subject(7).starts_with("tokend.prod-eu_1.rpc."));
        assert_eq!(Names::shard_of_key(&Names::owner_key(63)), Some(63));
        for bad in ["", "Prod", "a.b", "a b", &"x".repeat(33)] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }
}
