//! What the worker learns about its queue at start: the visibility timeout (heartbeats run
//! at half of it) and the dead-letter queue, from `DLQ_URL` or the queue's RedrivePolicy.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use webhook_shared::metrics::record_sqs_request;

/// Visibility timeout assumed when the queue cannot be asked (SQS's default).
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// The queue's settings that matter to the worker.
#[derive(Debug, Clone)]
pub(crate) struct QueueInfo {
    /// The queue's visibility timeout.
    pub(crate) visibility: Duration,
    /// The dead-letter queue, if one is configured or given.
    pub(crate) dlq_url: Option<String>,
}

/// Reads the main queue's visibility timeout and, unless `dlq_url` is given, its DLQ.
pub(crate) async fn discover(sqs: &Client, main_url: &str, dlq_url: Option<String>) -> QueueInfo {
    let result = sqs
        .get_queue_attributes()
        .queue_url(main_url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await;
    record_sqs_request("GetQueueAttributes", &result);
    let attributes = match result {
        Ok(output) => output.attributes.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(error = %DisplayErrorContext(&error), "reading the queue's attributes failed; assuming defaults");
            Default::default()
        }
    };
    let visibility = attributes
        .get(&QueueAttributeName::VisibilityTimeout)
        .and_then(|seconds| seconds.parse().ok())
        .map_or(DEFAULT_VISIBILITY, Duration::from_secs);
    let dlq_url = match dlq_url {
        Some(url) => Some(url),
        None => match attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .and_then(|p| dlq_from_redrive_policy(p))
        {
            Some((account, name)) => dlq_url_of(sqs, &account, &name).await,
            None => {
                tracing::warn!(
                    "the queue has no RedrivePolicy and DLQ_URL is not set: poison messages cannot be moved to a DLQ"
                );
                None
            }
        },
    };
    QueueInfo {
        visibility,
        dlq_url,
    }
}

async fn dlq_url_of(sqs: &Client, account: &str, name: &str) -> Option<String> {
    let result = sqs
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await;
    record_sqs_request("GetQueueUrl", &result);
    let url = result
        .map_err(|error| tracing::warn!(error = %DisplayErrorContext(&error), "finding the DLQ's URL failed"))
        .ok()?
        .queue_url?;
    tracing::info!(dlq_url = %url, "found the dead-letter queue from the RedrivePolicy");
    Some(url)
}

/// The account and queue name of `deadLetterTargetArn` (`arn:aws:sqs:REGION:ACCOUNT:NAME`).
fn dlq_from_redrive_policy(policy: &str) -> Option<(String, String)> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    let arn = policy.get("deadLetterTargetArn")?.as_str()?;
    let mut parts = arn.rsplitn(3, ':');
    let name = parts.next()?.to_owned();
    let account = parts.next()?.to_owned();
    Some((account, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dlq_from_a_redrive_policy() {
        let policy = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:hooks-dlq","maxReceiveCount":"5"}"#;
        assert_eq!(
            dlq_from_redrive_policy(policy),
            Some(("000000000000".into(), "hooks-dlq".into()))
        );
        assert_eq!(dlq_from_redrive_policy("{}"), None);
        assert_eq!(dlq_from_redrive_policy("not json"), None);
    }
}
