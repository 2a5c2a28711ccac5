//! A three-node NATS JetStream cluster on loopback, started and stopped by the test that needs it
//! (`nats-server` from the machine: `PAYLEDGER_TEST_NATS_SERVER`, default
//! `/usr/sbin/nats-server`). Nodes can be killed and restarted on the same ports and storage,
//! as a crashed machine would come back.
//!
//! When the binary is missing, tests fail if `CI=true`, and are skipped with a loud message
//! otherwise (as for the shared servers).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;

/// How long the cluster may take to elect its JetStream leader.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One node: its ports, its configuration file and, while it runs, its process.
struct Node {
    name: String,
    client_port: u16,
    config: PathBuf,
    process: Option<Child>,
}

/// A JetStream cluster of loopback nodes, each with its own storage in a temporary directory.
/// Every node is killed when it is dropped.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream answers with a stream of `size` replicas,
    /// or returns `None` when `nats-server` is missing outside CI.
    ///
    /// # Panics
    /// When `nats-server` is missing and `CI=true`, or the cluster does not become ready.
    pub async fn start(size: usize) -> Option<Self> {
        let binary = PathBuf::from(
            std::env::var("PAYLEDGER_TEST_NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into()),
        );
        if !binary.is_file() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{} is missing and CI=true", binary.display());
            }
            eprintln!(
                "\n*** SKIPPING a NATS cluster test: {} is missing ***\n",
                binary.display()
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, cluster)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, (client, cluster))| {
                let name = format!("n{i}");
                let config = dir.path().join(format!("{name}.conf"));
                let store = dir.path().join(&name);
                std::fs::write(
                    &config,
                    format!(
                        "server_name: {name}\nlisten: 127.0.0.1:{client}\n\
                         jetstream {{ store_dir: \"{}\" }}\n\
                         cluster {{ name: payledger_test\n listen: 127.0.0.1:{cluster}\n routes: [{}] }}\n",
                        store.display(),
                        routes.join(", ")
                    ),
                )
                .expect("node configuration");
                Node {
                    name,
                    client_port: *client,
                    config,
                    process: None,
                }
            })
            .collect();
        let mut cluster = Self {
            binary,
            nodes,
            _dir: dir,
        };
        for i in 0..size {
            cluster.start_node(i);
        }
        for i in 0..size {
            cluster.wait_listening(i).await;
        }
        cluster.wait_ready(size).await;
        Some(cluster)
    }

    /// The client URLs of every node, comma-separated (what `--nats-url` takes).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the node named `name` (`n0`, `n1`, …).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn start_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::File::create(node.config.with_extension("log")).expect("node log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting nats-server {}: {e}", node.name));
        node.process = Some(child);
    }

    /// Kills node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its ports and storage, and waits until it accepts clients.
    pub async fn restart(&mut self, i: usize) {
        self.start_node(i);
        self.wait_listening(i).await;
    }

    async fn wait_listening(&mut self, i: usize) {
        let port = self.nodes[i].client_port;
        let up = crate::eventually(READY_TIMEOUT, || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        if up.is_none() {
            let log = std::fs::read_to_string(self.nodes[i].config.with_extension("log")).unwrap_or_default();
            panic!("nats-server {} does not listen on {port}:\n{log}", self.nodes[i].name);
        }
    }

    /// A JetStream context on the cluster.
    ///
    /// # Panics
    /// When no node answers.
    pub async fn jetstream(&self) -> jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(payledger_bus::server_addrs(&self.urls()).expect("the cluster's URLs"))
            .await
            .expect("a client of the cluster");
        jetstream::new(client)
    }

    /// Waits until a stream of `replicas` copies can be created (a JetStream meta leader exists
    /// and enough nodes joined), then deletes that probe.
    async fn wait_ready(&self, replicas: usize) {
        let js = self.jetstream().await;
        let probe = format!("PROBE_{}", uuid::Uuid::new_v4().simple());
        let made = crate::eventually(READY_TIMEOUT, || {
            let (js, probe) = (js.clone(), probe.clone());
            async move {
                js.create_stream(jetstream::stream::Config {
                    name: probe.clone(),
                    subjects: vec![format!("{}.>", probe.to_lowercase())],
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .ok()
                .map(|_| ())
            }
        })
        .await;
        assert!(made.is_some(), "the NATS cluster did not become ready");
        let _ = js.delete_stream(&probe).await;
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
