//! The `healthcheck` subcommand both binaries have: asks the running process's ops server for
//! `/healthz` and exits 0 or 1, so container health checks need no curl in the image.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long the whole check may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Succeeds when `GET /healthz` on the ops server at `addr` answers 200. An unspecified
/// address (`0.0.0.0`, `[::]`) is checked on loopback.
pub async fn check(addr: SocketAddr) -> anyhow::Result<()> {
    let target = match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    };
    let status = tokio::time::timeout(TIMEOUT, get_healthz(target))
        .await
        .with_context(|| format!("no answer from {target} within {TIMEOUT:?}"))??;
    if status != StatusCode::OK {
        bail!("{target}/healthz answered {status}");
    }
    Ok(())
}

async fn get_healthz(target: SocketAddr) -> anyhow::Result<StatusCode> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header(http::header::HOST, target.to_string())
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?.status())
}
