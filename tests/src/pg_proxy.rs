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
//!
//! [`PgProxy::reset`] resets every connection open now (RST to both sides) while new ones
//! work. [`PgProxy::silence_all`] makes everything silent: the connections open now as with
//! `silence`, and new ones accepted but never forwarded nor answered, until
//! [`PgProxy::end_silence`] (the connections silenced meanwhile stay silent).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Bumped by [`PgProxy::reset`]: connections accepted before are reset.
    resets: watch::Sender<u64>,
    /// While set, new connections are accepted and never forwarded.
    all_silent: Arc<AtomicBool>,
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
            resets: watch::Sender::new(0),
            all_silent: Arc::default(),
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

    /// Resets every connection open now (RST to the client and to the server), new ones
    /// work; returns how many were open.
    pub fn reset(&self) -> usize {
        self.resets.send_modify(|resets| *resets += 1);
        self.open.load(Ordering::SeqCst)
    }

    /// Makes everything silent: the connections open now as with [`PgProxy::silence`], and
    /// new ones accepted but never forwarded nor answered, until [`PgProxy::end_silence`];
    /// returns how many were open.
    pub fn silence_all(&self) -> usize {
        self.all_silent.store(true, Ordering::SeqCst);
        self.silence()
    }

    /// Ends [`PgProxy::silence_all`]: new connections are forwarded again.
    pub fn end_silence(&self) {
        self.all_silent.store(false, Ordering::SeqCst);
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, up) = (self.upstream.clone(), self.up.subscribe());
        let open = Arc::clone(&self.open);
        let (epochs, resets) = (self.epoch.subscribe(), self.resets.subscribe());
        let all_silent = Arc::clone(&self.all_silent);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                open.fetch_add(1, Ordering::SeqCst);
                let open = Arc::clone(&open);
                let (upstream, mut up) = (upstream.clone(), up.clone());
                let (mut epochs, mut resets) = (epochs.clone(), resets.clone());
                let born = Born {
                    epoch: *epochs.borrow_and_update(),
                    resets: *resets.borrow_and_update(),
                    silent: all_silent.load(Ordering::SeqCst),
                };
                tokio::spawn(async move {
                    tokio::select! {
                        () = forward(client, &upstream, &mut epochs, &mut resets, born) => {}
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

/// What a connection saw when it was accepted.
#[derive(Debug, Clone, Copy)]
struct Born {
    /// The silence epoch.
    epoch: u64,
    /// The reset count.
    resets: u64,
    /// Whether everything was silent: then it is never forwarded.
    silent: bool,
}

/// Copies bytes both ways until either side closes; until the epoch moves past `born`'s:
/// then the server side is closed and the client's bytes are swallowed unanswered; or until
/// the reset count moves past `born`'s: then both sides are reset. A connection born while
/// everything is silent is swallowed from the start.
async fn forward(
    mut client: TcpStream,
    upstream: &str,
    epochs: &mut watch::Receiver<u64>,
    resets: &mut watch::Receiver<u64>,
    born: Born,
) {
    if !born.silent {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = epochs.wait_for(|epoch| *epoch != born.epoch) => {}
            _ = resets.wait_for(|count| *count != born.resets) => {
                // SO_LINGER 0: closing sends RST instead of FIN.
                let _ = client.set_zero_linger();
                let _ = server.set_zero_linger();
                return;
            }
        }
    }
    let mut sink = [0_u8; 8192];
    while matches!(
        tokio::io::AsyncReadExt::read(&mut client, &mut sink).await,
        Ok(n) if n > 0
    ) {}
}
