//! A loopback TCP load balancer, to put workers and frontends behind several
//! scheduler replicas as a real deployment does.
//!
//! Each accepted connection goes to the next backend in turn; a backend that
//! refuses the connection (a replica that died) is skipped for the next one.
//! Bytes are copied both ways until either side closes, so a backend that dies
//! takes its connections with it, as a crashed process does.
//!
//! HTTP clients keep connections open, so one client would stay on one
//! backend for as long as its connection lives. [`Spread::Requests`] spreads
//! requests instead: the proxy adds `Connection: close` to the (HTTP/1.1)
//! request of each connection, so the server closes it after answering and
//! the client, told so in the answer, sends its next request on a new
//! connection, to the next backend. Every client's heartbeats, creates and
//! results are then spread over all backends, and no client ever sends on a
//! connection the proxy is closing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A round-robin TCP proxy on `127.0.0.1`.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    /// Connections handed to each backend.
    connections: Vec<AtomicUsize>,
    /// Connections closed at once because no backend took them.
    refused: AtomicUsize,
    spread: Spread,
}

/// What goes round robin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Each connection, for as long as the client keeps it (a plain TCP balancer).
    Connections,
    /// Each HTTP/1.1 request: one request per connection (`Connection: close`).
    Requests,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `backends` in turn.
    pub async fn start(backends: Vec<SocketAddr>, spread: Spread) -> Proxy {
        assert!(!backends.is_empty(), "a proxy needs a backend");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            connections: backends.iter().map(|_| AtomicUsize::new(0)).collect(),
            backends,
            next: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            spread,
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let shared = accepting.clone();
                tokio::spawn(async move { shared.forward(client).await });
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and the proxy's address, for clients and workers.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many connections backend `i` (in the order given) was handed.
    pub fn connections(&self, i: usize) -> usize {
        self.shared.connections[i].load(Ordering::Relaxed)
    }

    /// How many connections found no live backend.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Shared {
    async fn forward(&self, client: TcpStream) {
        let n = self.backends.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            let i = (first + k) % n;
            // A dead loopback backend refuses at once: try the next one.
            if let Ok(backend) = TcpStream::connect(self.backends[i]).await {
                self.connections[i].fetch_add(1, Ordering::Relaxed);
                pipe(client, backend, self.spread).await;
                return;
            }
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies bytes both ways until a side closes, then closes both; with
/// [`Spread::Requests`], adds `Connection: close` after the request line.
async fn pipe(client: TcpStream, backend: TcpStream, spread: Spread) {
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut backend_read, mut backend_write) = backend.into_split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    // Whether the header is still to be added (the request line not yet seen whole).
    let mut add_close = spread == Spread::Requests;
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut bytes = &up[..n];
                    if add_close {
                        if let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") {
                            let (line, rest) = bytes.split_at(end + 2);
                            if backend_write.write_all(line).await.is_err()
                                || backend_write.write_all(b"Connection: close\r\n").await.is_err()
                            {
                                return;
                            }
                            bytes = rest;
                            add_close = false;
                        }
                    }
                    if backend_write.write_all(bytes).await.is_err() {
                        return;
                    }
                }
            },
            read = backend_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if client_write.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}
