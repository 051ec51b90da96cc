//! AWS's Python SQS extended client as a third-party producer and consumer of the test's
//! queue: runs `tests/helpers/extended_client.py` with the LocalStack venv's python, where
//! `scripts/localstack.sh install` put `amazon-sqs-extended-client`.

use std::path::PathBuf;
use std::time::Duration;

use crate::queues::sqs_endpoint;
use crate::{TestStack, state_dir, workspace_root};

/// How long one run of the helper may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A message as the library hands it to its user: the pointer resolved.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// The resolved body (the object's text, for an offloaded message).
    pub body: String,
    /// Its message attributes (string values).
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl TestStack {
    /// Sends `body` to the main queue through the library with `always_through_s3`: an
    /// object in `bucket` plus a pointer message. Returns the SQS message id.
    pub async fn extended_client_send(&self, bucket: &str, body: &str) -> String {
        let file = std::env::temp_dir().join(format!("xc-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, body).expect("writing the body file");
        let path = file.to_str().expect("utf-8 temp path").to_owned();
        let output = run(&["send", &self.queue_url, bucket, &path]).await;
        let _ = std::fs::remove_file(&file);
        output.trim().to_owned()
    }

    /// Receives up to `max` messages from the main queue through the library (pointers
    /// resolved), deleting each; waits at most `wait`.
    pub async fn extended_client_receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Vec<ReceivedMessage> {
        let output = run(&[
            "receive",
            &self.queue_url,
            "--max",
            &max.to_string(),
            "--wait",
            &wait.as_secs().to_string(),
        ])
        .await;
        output
            .lines()
            .map(|line| {
                let value: serde_json::Value =
                    serde_json::from_str(line).expect("the helper prints JSON lines");
                ReceivedMessage {
                    body: value["body"].as_str().expect("a body").to_owned(),
                    attributes: value["attributes"]
                        .as_object()
                        .expect("attributes")
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                }
            })
            .collect()
    }
}

/// The LocalStack venv's python.
fn python() -> PathBuf {
    state_dir().join("localstack-venv/bin/python")
}

/// Runs the helper with `args`; panics with its stderr when it fails. Returns its stdout.
async fn run(args: &[&str]) -> String {
    let script = workspace_root().join("tests/helpers/extended_client.py");
    let python = python();
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .args(args)
        .env("AWS_ENDPOINT_URL", sqs_endpoint())
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("the extended-client helper finishes within its timeout")
        .unwrap_or_else(|error| {
            panic!(
                "running {} (scripts/localstack.sh install puts the extended client there): {error}",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "extended_client.py {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the helper prints UTF-8")
}
