//! A real OTLP receiver for the tracing tests: Elastic's mock OTLP server
//! (`tests/helpers/otlp-receiver/receiver.js`, installed from npm by
//! `scripts/otlp-receiver.sh install` under `$SW_STATE_DIR` or `.local`), listening on
//! 127.0.0.1 and a free port. Every span it receives is kept, as it printed it.

use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::{state_dir, workspace_root};

/// How long the receiver may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A span as the receiver got it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: Option<String>,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_PRODUCER`, ...
    pub kind: String,
    /// Attributes by key.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// Links (trace and span ids, hex).
    pub links: Vec<LinkedSpan>,
    /// The status (`code` as `STATUS_CODE_ERROR` etc.).
    pub status: serde_json::Value,
}

/// One link of a span.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkedSpan {
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
}

impl ReceivedSpan {
    /// A string attribute.
    pub fn attribute(&self, key: &str) -> Option<String> {
        match self.attributes.get(key)? {
            serde_json::Value::String(value) => Some(value.clone()),
            other => Some(other.to_string().trim_matches('"').to_owned()),
        }
    }

    /// Whether the span links to `other`.
    pub fn links_to(&self, other: &ReceivedSpan) -> bool {
        self.links
            .iter()
            .any(|link| link.trace_id == other.trace_id && link.span_id == other.span_id)
    }
}

/// The running receiver; stopped when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    url: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    _child: Child,
}

impl OtlpReceiver {
    /// Starts the receiver and waits until it listens.
    pub async fn start() -> Self {
        let modules = state_dir().join("otlp-receiver/node_modules");
        assert!(
            modules.join("@elastic/mockotlpserver").is_dir(),
            "no OTLP receiver in {}: run scripts/otlp-receiver.sh install (scripts/test.sh does)",
            modules.display()
        );
        let mut child = Command::new("node")
            .arg(workspace_root().join("tests/helpers/otlp-receiver/receiver.js"))
            .env("NODE_PATH", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting node (the OTLP receiver)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .expect("the OTLP receiver did not start in time")
            .expect("reading the receiver's output")
            .expect("the OTLP receiver exited at start");
        let url = first
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line from the receiver: {first}"))
            .trim_end_matches('/')
            .to_owned();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(json) = line.strip_prefix("span ") else {
                    continue;
                };
                let span: ReceivedSpan = serde_json::from_str(json).unwrap_or_else(|error| {
                    panic!("a span line that does not parse ({error}): {json}")
                });
                kept.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(span);
            }
        });
        Self {
            url,
            spans,
            _child: child,
        }
    }

    /// The base URL to give as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
