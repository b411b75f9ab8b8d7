//! A partition: one tokend node in a network namespace of its own, reached
//! by clients over one veth pair and reaching NATS over another; the test
//! cuts the NATS link while clients keep talking to the node.
//!
//! What must hold: the cut-off node stops acknowledging within its lease
//! (nothing it cannot make durable is acknowledged anyway, but it must also
//! stop *serving* — reads included — once another node may own its
//! shards), the other nodes take its shards over, and nothing it
//! acknowledged before the cut is lost. The namespace and links are created
//! by the test and removed after; where the machine refuses to create them
//! (no root, no `ip`), the test says so and checks nothing — the pause-based
//! faults of `faults.rs` cover the same fencing.

use super::faults::{ready_view, served, wait_settled};
use super::process::{tokend_command, Log};
use super::support::{http_get, Api, Cluster, NatsCluster, ADMIN_KEY, READY_TIMEOUT};
use reqwest::Method;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lease (3 s) minus its margin, plus a tick and some slack: by then
/// the cut-off node must have stopped serving.
const STOPS_SERVING_WITHIN: Duration = Duration::from_secs(4);

/// A network namespace with two veth pairs to the host; removed on drop.
struct Namespace {
    name: String,
    /// Host side of the NATS link.
    nats_link: String,
    /// Host side of the clients' link.
    client_link: String,
    /// Address of the host on the NATS link, as the namespace sees it.
    host_ip: String,
    /// Address of the node on the client link.
    node_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let id = std::process::id() % 100_000;
        // Two /30 networks derived from the process id, so parallel runs
        // on one machine do not collide.
        let (a, b) = (id % 250, (id / 250) % 50);
        let nats_net = format!("10.{}.{a}", 200 + b);
        let client_net = format!("10.{}.{a}", 150 + b);
        let ns = Namespace {
            name: format!("tkd-part-{id}"),
            nats_link: format!("tkn{id}"),
            client_link: format!("tkc{id}"),
            host_ip: format!("{nats_net}.1"),
            node_ip: format!("{client_net}.2"),
        };
        let setup = || -> Result<(), String> {
            ip(&["netns", "add", &ns.name])?;
            ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
            for (host, inner, host_ip, inner_ip) in [
                (
                    &ns.nats_link,
                    "natslink",
                    format!("{nats_net}.1"),
                    format!("{nats_net}.2"),
                ),
                (
                    &ns.client_link,
                    "clientlink",
                    format!("{client_net}.1"),
                    format!("{client_net}.2"),
                ),
            ] {
                ip(&["link", "add", host, "type", "veth", "peer", "name", inner])?;
                ip(&["link", "set", inner, "netns", &ns.name])?;
                ip(&["addr", "add", &format!("{host_ip}/30"), "dev", host])?;
                ip(&["link", "set", host, "up"])?;
                ip(&[
                    "-n",
                    &ns.name,
                    "addr",
                    "add",
                    &format!("{inner_ip}/30"),
                    "dev",
                    inner,
                ])?;
                ip(&["-n", &ns.name, "link", "set", inner, "up"])?;
            }
            Ok(())
        };
        // On failure, dropping `ns` removes whatever was created.
        setup().map(|()| ns)
    }

    /// Cuts (or heals) the node's link to NATS, leaving clients' link up.
    fn nats_link(&self, up: bool) {
        ip(&[
            "link",
            "set",
            &self.nats_link,
            if up { "up" } else { "down" },
        ])
        .expect("the link changes state");
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth ends inside it, and with
        // them their peers on the host.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.nats_link]);
        let _ = ip(&["link", "del", &self.client_link]);
    }
}

/// The node inside the namespace.
struct IsolatedNode {
    child: Child,
    log: Log,
    addr: SocketAddr,
}

impl Drop for IsolatedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl IsolatedNode {
    fn start(ns: &Namespace, nats: &NatsCluster, shards: u16, data_dir: &std::path::Path) -> Self {
        let port = super::support::free_ports(1)[0];
        let urls: Vec<String> = (0..nats.len())
            .map(|i| format!("nats://{}:{}", ns.host_ip, nats.client_port(i)))
            .collect();
        let tokend = tokend_command();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns.name])
            .arg(tokend.get_program());
        for (name, value) in tokend.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command
            .args(["serve", "--listen", &format!("{}:{port}", ns.node_ip)])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--cluster", &urls.join(",")])
            .args([
                "--node-id",
                "isolated",
                "--cluster-name",
                super::support::CLUSTER_NAME,
            ])
            .args(["--cluster-shards", &shards.to_string()])
            .env("TOKEND_ADMIN_KEY", ADMIN_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec starts");
        let log = Log::default();
        log.drain(child.stderr.take().expect("piped stderr"));
        let addr: SocketAddr = format!("{}:{port}", ns.node_ip)
            .parse()
            .expect("an address");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = http_get(addr, "/health/ready") {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the isolated node exited ({status}):\n{}", log.text());
            }
            assert!(
                Instant::now() < deadline,
                "the isolated node is not ready:\n{}",
                log.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        IsolatedNode { child, log, addr }
    }

    /// The shards it says it serves (`None`: no answer).
    fn held(&self) -> Option<BTreeSet<usize>> {
        ready_view(self.addr).map(|(held, _)| held)
    }

    /// How many shards it serves (`None`: no answer).
    fn serving(&self) -> Option<usize> {
        self.held().map(|held| held.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_from_nats_stops_acknowledging_within_its_lease() {
    let ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("network namespaces are not available here ({e}); the partition is not tested, the pause-based faults cover fencing");
            return;
        }
    };
    let shards = 8;
    let nats = NatsCluster::start_listening(3, "0.0.0.0");
    let mut cluster = Cluster::on(nats, 2, shards);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let isolated = tokio::task::block_in_place(|| {
        IsolatedNode::start(&ns, cluster.nats(), shards, dir.path())
    });
    // Settled: the two host nodes and the isolated one share the shards.
    let deadline = Instant::now() + READY_TIMEOUT;
    while isolated.serving().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the isolated node serves no shard:\n{}",
            isolated.log.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::task::block_in_place(|| wait_all_served(&cluster, &isolated, shards));
    let far = Api::new(&format!("http://{}", isolated.addr), ADMIN_KEY);
    let key = cluster.api(0).tenant_key("partition").await;
    let collection = cluster.api(1).create_collection(&key, "cards").await;
    let tokens: Vec<serde_json::Value> = (0..64)
        .map(|_| json!({"collectionId": collection}))
        .collect();
    let reply = far
        .post_retrying(&key, "/api/tokens/batch", &json!({ "tokens": tokens }))
        .await
        .expect(201);
    let ids: Vec<String> = reply.body["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect();
    // Before the cut: redeem half of them through the isolated node.
    let mut acknowledged: BTreeMap<String, String> = BTreeMap::new();
    for id in ids.iter().take(32) {
        let idem = format!("before-{id}");
        far.post(
            &key,
            &format!("/api/tokens/{id}/redeem"),
            &json!({"idempotencyKey": idem}),
        )
        .await
        .expect(200);
        acknowledged.insert(id.clone(), idem);
    }

    ns.nats_link(false);
    let cut = Instant::now();
    // Clients keep talking to it: after its lease, nothing is acknowledged.
    let mut after_lease = 0;
    for id in ids.iter().skip(32) {
        let idem = format!("during-{id}");
        let path = format!("/api/tokens/{id}/redeem");
        let sent = Instant::now();
        let reply = far
            .try_call(
                Method::POST,
                &path,
                Some(&key),
                Some(&json!({"idempotencyKey": idem})),
            )
            .await;
        if let Ok(reply) = reply {
            if reply.status == 200 {
                assert!(
                    sent.duration_since(cut) < STOPS_SERVING_WITHIN,
                    "the cut-off node acknowledged a redeem {:?} after the cut",
                    sent.duration_since(cut)
                );
                acknowledged.insert(id.clone(), idem);
            } else {
                assert!(
                    reply.status == 503,
                    "a cut-off node answers 503: {} {}",
                    reply.status,
                    reply.body
                );
            }
        }
        if cut.elapsed() > STOPS_SERVING_WITHIN {
            after_lease += 1;
            // Reads too: it no longer serves anything.
            let read = far
                .try_call(Method::GET, &format!("/api/tokens/{id}"), Some(&key), None)
                .await;
            if let Ok(read) = read {
                assert_eq!(
                    read.status, 503,
                    "a read from a node without a lease: {}",
                    read.body
                );
            }
        }
        if after_lease >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(after_lease > 0, "requests reached the node after its lease");
    assert_eq!(
        isolated.serving(),
        Some(0),
        "the cut-off node serves no shard"
    );
    // The others took its shards over; everything it acknowledged is there.
    tokio::task::block_in_place(|| wait_settled(&cluster, READY_TIMEOUT));
    for (id, idem) in &acknowledged {
        let read = cluster
            .api(0)
            .get(&key, &format!("/api/tokens/{id}"))
            .await
            .expect(200);
        assert_eq!(
            read.body["status"],
            json!("redeemed"),
            "{id}: {}",
            read.body
        );
        assert_eq!(read.body["redemption"]["idempotencyKey"], json!(idem));
    }
    // Healed, it joins again and gets its share back.
    ns.nats_link(true);
    let deadline = Instant::now() + READY_TIMEOUT;
    while isolated.serving().unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the healed node serves nothing:\n{}",
            isolated.log.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.node_mut(0).terminate();
}

/// Waits until the host nodes and the isolated one together serve every
/// shard exactly once, each of them some, twice in a row.
fn wait_all_served(cluster: &Cluster, isolated: &IsolatedNode, shards: u16) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut stable = 0;
    loop {
        let mut views: Vec<BTreeSet<usize>> = served(cluster).into_iter().map(|(_, s)| s).collect();
        views.push(isolated.held().unwrap_or_default());
        let mut count = vec![0usize; usize::from(shards)];
        for view in &views {
            for s in view {
                count[*s] += 1;
            }
        }
        let settled = count.iter().all(|c| *c == 1) && views.iter().all(|v| !v.is_empty());
        stable = if settled { stable + 1 } else { 0 };
        if stable == 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shards not settled over the three nodes: {views:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
