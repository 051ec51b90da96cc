//! A TCP proxy in front of PostgreSQL that a test can cut and restore, to simulate a
//! database outage for one process without touching the server other tests share.
//!
//! While cut, every proxied connection is closed and the port refuses new ones (the
//! listener is closed, as when the database host is down); `restore` listens again on the
//! same port.
//!
//! [`PgProxy::silence`] makes the connections open now go silent while new ones work: their
//! server side is closed (PostgreSQL rolls back what they had begun) and their client side
//! stays open, what it sends read and dropped, nothing answered: a Multi-AZ failover whose
//! old primary vanished, a dropped NAT entry, a proxy holding a dead backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long `cut` waits for the proxied connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A proxy on a free 127.0.0.1 port forwarding to the server of a PostgreSQL URL.
#[derive(Debug)]
pub struct PgProxy {
    addr: SocketAddr,
    upstream: String,
    proxied_url: String,
    /// `true` while connections are forwarded; dropping it closes every connection.
    up: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
    accept_loop: Mutex<Option<JoinHandle<()>>>,
    /// Bumped by [`PgProxy::silence`]: connections accepted before go silent.
    epoch: watch::Sender<u64>,
}

impl PgProxy {
    /// Starts forwarding to the host and port of `database_url`
    /// (`postgres://user@host:port/db?...`).
    pub async fn start(database_url: &str) -> Self {
        let (scheme, rest) = database_url
            .split_once("://")
            .expect("a database URL has a scheme");
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (user, host_port) = match authority.rsplit_once('@') {
            Some((user, host_port)) => (format!("{user}@"), host_port),
            None => (String::new(), authority),
        };
        let upstream = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:5432")
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let proxy = Self {
            addr,
            proxied_url: format!("{scheme}://{user}{addr}{path}"),
            upstream,
            up: watch::Sender::new(true),
            open: Arc::default(),
            accept_loop: Mutex::new(None),
            epoch: watch::Sender::new(0),
        };
        proxy.serve(listener);
        proxy
    }

    /// `database_url` with the proxy in place of the server.
    pub fn url(&self) -> &str {
        &self.proxied_url
    }

    /// Starts the outage: closes the listener (new connections are refused) and every
    /// proxied connection; returns how many were open. Waits until they are all closed.
    pub async fn cut(&self) -> usize {
        let accept_loop = self.accept_loop.lock().expect("lock").take();
        if let Some(accept_loop) = accept_loop {
            accept_loop.abort();
            let _ = accept_loop.await;
        }
        let open = self.open.load(Ordering::SeqCst);
        self.up.send_replace(false);
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        while self.open.load(Ordering::SeqCst) > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "proxied connections still open {CLOSE_TIMEOUT:?} after the cut"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        open
    }

    /// Ends the outage: listens on the same port again.
    pub async fn restore(&self) {
        self.up.send_replace(true);
        let listener = TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|error| panic!("listening on {} again: {error}", self.addr));
        self.serve(listener);
    }

    /// Makes every connection open now go silent (new ones work); returns how many.
    pub fn silence(&self) -> usize {
        self.epoch.send_modify(|epoch| *epoch += 1);
        self.open.load(Ordering::SeqCst)
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, up) = (self.upstream.clone(), self.up.subscribe());
        let open = Arc::clone(&self.open);
        let epochs = self.epoch.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                open.fetch_add(1, Ordering::SeqCst);
                let open = Arc::clone(&open);
                let (upstream, mut up) = (upstream.clone(), up.clone());
                let mut epochs = epochs.clone();
                let born = *epochs.borrow_and_update();
                tokio::spawn(async move {
                    tokio::select! {
                        () = forward(client, &upstream, &mut epochs, born) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        *self.accept_loop.lock().expect("lock") = Some(task);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        if let Some(accept_loop) = self.accept_loop.lock().expect("lock").take() {
            accept_loop.abort();
        }
        // Connection tasks end when they see the outage.
        self.up.send_replace(false);
    }
}

/// Copies bytes both ways until either side closes, or until the epoch moves past `born`:
/// then the server side is closed and the client's bytes are swallowed unanswered.
async fn forward(
    mut client: TcpStream,
    upstream: &str,
    epochs: &mut watch::Receiver<u64>,
    born: u64,
) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = epochs.wait_for(|epoch| *epoch != born) => {}
    }
    drop(server);
    let mut sink = [0_u8; 8192];
    while matches!(
        tokio::io::AsyncReadExt::read(&mut client, &mut sink).await,
        Ok(n) if n > 0
    ) {}
}
