//! A few hand-made HTTP/2 frames on one socket, for watching a single h2c connection: the
//! preface, SETTINGS and PING acknowledgements, a POST, and whether GOAWAY or the close came.
//! A pooled client would reconnect behind the test's back.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One frame as read.
struct Frame {
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: Vec<u8>,
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) struct Ending {
    /// Whether the server sent GOAWAY before closing.
    pub(crate) goaway: bool,
}

/// One h2c (prior knowledge) connection.
pub(crate) struct H2Probe {
    stream: TcpStream,
    authority: String,
}

impl H2Probe {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub(crate) async fn connect(authority: &str) -> Self {
        let stream = TcpStream::connect(authority).await.expect("connect");
        let mut probe = Self {
            stream,
            authority: authority.to_owned(),
        };
        probe.stream.write_all(PREFACE).await.expect("preface");
        probe.send(SETTINGS, 0, 0, &[]).await;
        probe
    }

    /// Sends `POST path` with `body` on `stream_id` (odd, increasing).
    pub(crate) async fn post(&mut self, stream_id: u32, path: &str, body: &[u8]) {
        // HPACK: :method POST and :scheme http from the static table (indexed), :path and
        // :authority as literals without indexing, names from the static table, no Huffman.
        let mut block = vec![0x83, 0x86];
        for (index, value) in [(0x04, path), (0x01, self.authority.as_str())] {
            let length = u8::try_from(value.len()).expect("short value");
            assert!(length < 0x7f, "value too long for a one-byte length");
            block.push(index);
            block.push(length);
            block.extend_from_slice(value.as_bytes());
        }
        self.send(HEADERS, END_HEADERS, stream_id, &block).await;
        self.send(DATA, END_STREAM, stream_id, body).await;
    }

    /// Waits for the response headers on `stream_id`; `Err` says what came instead.
    pub(crate) async fn response(&mut self, stream_id: u32) -> Result<(), String> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(15), self.next_frame())
                .await
                .map_err(|_| "no response".to_owned())?
                .ok_or_else(|| "closed".to_owned())?;
            match frame.kind {
                HEADERS if frame.stream_id == stream_id => return Ok(()),
                RST_STREAM if frame.stream_id == stream_id => return Err("reset".to_owned()),
                GOAWAY => return Err("goaway".to_owned()),
                _ => {}
            }
        }
    }

    /// Reads (and acknowledges) frames until the server closes the connection; panics if it
    /// is still open after `limit`.
    pub(crate) async fn until_closed(&mut self, limit: Duration) -> Ending {
        let mut ending = Ending { goaway: false };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Err(_) => panic!("h2 connection still open after {limit:?}"),
                Ok(None) => return ending,
                Ok(Some(frame)) => ending.goaway |= frame.kind == GOAWAY,
            }
        }
    }

    /// The next frame, after acknowledging SETTINGS and PING; `None` once the connection
    /// is closed (or reset).
    async fn next_frame(&mut self) -> Option<Frame> {
        let mut head = [0_u8; 9];
        self.stream.read_exact(&mut head).await.ok()?;
        let length = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; length];
        self.stream.read_exact(&mut payload).await.ok()?;
        let frame = Frame {
            kind: head[3],
            flags: head[4],
            stream_id: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        };
        if frame.flags & ACK == 0 {
            match frame.kind {
                SETTINGS => self.send(SETTINGS, ACK, 0, &[]).await,
                PING => self.send(PING, ACK, 0, &frame.payload.clone()).await,
                _ => {}
            }
        }
        Some(frame)
    }

    async fn send(&mut self, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
        let length = u32::try_from(payload.len())
            .expect("small frame")
            .to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags];
        frame.extend_from_slice(&stream_id.to_be_bytes());
        frame.extend_from_slice(payload);
        // The server may already have closed; the reads say so.
        let _ = self.stream.write_all(&frame).await;
    }
}
