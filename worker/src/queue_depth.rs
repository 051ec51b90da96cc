//! Refreshes `webhook_queue_messages` for the main queue and its dead-letter queue from
//! GetQueueAttributes on an interval. The DLQ is found from the RedrivePolicy when not given.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use tokio_util::sync::CancellationToken;
use webhook_shared::metrics::record_sqs_request;

use crate::metrics::QUEUE_MESSAGES;

/// The attributes read, with the `state` label each one sets.
const STATES: [(QueueAttributeName, &str); 3] = [
    (QueueAttributeName::ApproximateNumberOfMessages, "visible"),
    (
        QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        "in_flight",
    ),
    (
        QueueAttributeName::ApproximateNumberOfMessagesDelayed,
        "delayed",
    ),
];

/// Refreshes the gauges every `interval` until `shutdown`.
pub async fn run(
    sqs: Client,
    main_url: String,
    mut dlq_url: Option<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    while shutdown.run_until_cancelled(ticks.tick()).await.is_some() {
        refresh(&sqs, "main", &main_url).await;
        if dlq_url.is_none() {
            dlq_url = find_dlq(&sqs, &main_url).await;
        }
        if let Some(dlq_url) = &dlq_url {
            refresh(&sqs, "dlq", dlq_url).await;
        }
    }
}

async fn refresh(sqs: &Client, queue: &'static str, url: &str) {
    let result = sqs
        .get_queue_attributes()
        .queue_url(url)
        .set_attribute_names(Some(STATES.iter().map(|(name, _)| name.clone()).collect()))
        .send()
        .await;
    record_sqs_request("GetQueueAttributes", &result);
    let attributes = match result {
        Ok(output) => output.attributes.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(queue, error = %DisplayErrorContext(&error), "reading queue depth failed");
            return;
        }
    };
    for (name, state) in STATES {
        if let Some(count) = attributes
            .get(&name)
            .and_then(|value| value.parse::<f64>().ok())
        {
            metrics::gauge!(QUEUE_MESSAGES, "queue" => queue, "state" => state).set(count);
        }
    }
}

/// The DLQ's URL from the main queue's RedrivePolicy, if it has one.
async fn find_dlq(sqs: &Client, main_url: &str) -> Option<String> {
    let result = sqs
        .get_queue_attributes()
        .queue_url(main_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await;
    record_sqs_request("GetQueueAttributes", &result);
    let output = result
        .map_err(|error| tracing::warn!(error = %DisplayErrorContext(&error), "reading RedrivePolicy failed"))
        .ok()?;
    let policy = output
        .attributes()?
        .get(&QueueAttributeName::RedrivePolicy)?;
    let (account, name) = dlq_from_redrive_policy(policy)?;
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
