//! A TCP proxy to simulate an outage of a server the tests share (PostgreSQL, NATS) without
//! touching the server itself: other tests run against it at the same time.
//!
//! Stopping the proxy cuts every connection through it (both ends see the socket close) and
//! closes its port, so new connections are refused, as when the server is down. Starting it
//! again on the same port brings the server back. Freezing it instead keeps every connection
//! open but forwards nothing, in either direction, as a network that drops packets would (a
//! half-open connection: neither end learns that the other is gone).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A TCP proxy on 127.0.0.1 in front of `upstream`.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
    frozen: watch::Sender<bool>,
}

impl Proxy {
    /// A proxy on a free port, not listening yet (the port is closed).
    ///
    /// # Panics
    /// When no local port can be bound.
    pub async fn new(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        Self {
            addr,
            upstream,
            task: None,
            frozen: watch::channel(false).0,
        }
    }

    /// A listening proxy in front of the server `url` names (`scheme://[user@]host:port/…`;
    /// without a port, `default_port`).
    ///
    /// # Panics
    /// When `url` does not parse or its host does not resolve.
    pub async fn in_front_of(url: &str, default_port: u16) -> Self {
        let mut proxy = Self::new(upstream_of(url, default_port)).await;
        proxy.start().await;
        proxy
    }

    /// `url` with its host and port replaced by the proxy's (user, path and query kept), so a
    /// client given it connects through the proxy.
    ///
    /// # Panics
    /// When `url` does not parse as a URL with a host.
    pub fn url_for(&self, url: &str) -> String {
        let mut u = url::Url::parse(url).expect("a URL");
        u.set_ip_host(self.addr.ip()).expect("a URL with a host");
        u.set_port(Some(self.addr.port())).expect("a URL with a port");
        u.to_string()
    }

    /// Listens and forwards every connection to the upstream server.
    ///
    /// # Panics
    /// When the port cannot be bound again (another process took it meanwhile).
    pub async fn start(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind the proxy port");
        let upstream = self.upstream;
        self.frozen.send_replace(false);
        let frozen = self.frozen.subscribe();
        self.task = Some(tokio::spawn(async move {
            // Dropped with this task: every connection is cut.
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                // Reap finished connections so a long test does not accumulate them.
                while connections.try_join_next().is_some() {}
                let mut frozen = frozen.clone();
                connections.spawn(async move {
                    if !*frozen.borrow() {
                        let Ok(mut server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                            _ = frozen.wait_for(|f| *f) => {}
                        }
                        // Frozen: hold both sockets open, forwarding nothing, until cut.
                        std::future::pending::<()>().await;
                    }
                    std::future::pending::<()>().await;
                });
            }
        }));
    }

    /// Stops forwarding without closing anything: every connection, open or new, stays open
    /// and silent until [`Proxy::stop`] cuts it.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Cuts every connection and closes the port.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The socket address of the server `url` names (`default_port` when it has none).
///
/// # Panics
/// When `url` does not parse or its host does not resolve.
pub fn upstream_of(url: &str, default_port: u16) -> SocketAddr {
    let u = url::Url::parse(url).expect("a URL");
    let host = u.host_str().expect("a URL with a host");
    let port = u.port().unwrap_or(default_port);
    std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("{host}:{port} resolves"))
}
