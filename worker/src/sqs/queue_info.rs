//! What the worker learns about its queue at start: the visibility timeout (heartbeats run
//! at half of it) and the dead-letter queue, from `DLQ_URL` or the queue's RedrivePolicy.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use crate::sqs::admin::QueueAdmin;

/// Visibility timeout assumed when the queue cannot be asked (SQS's default).
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// The queue's settings that matter to the worker.
#[derive(Debug, Clone)]
pub(crate) struct QueueInfo {
    /// The main queue's URL.
    pub(crate) url: String,
    /// The queue's visibility timeout.
    pub(crate) visibility: Duration,
    /// The dead-letter queue, if one is configured or given.
    pub(crate) dlq_url: Option<String>,
}

/// Reads the main queue's visibility timeout and, unless `dlq_url` is given, its DLQ.
pub(crate) async fn discover(
    admin: &impl QueueAdmin,
    main_url: &str,
    dlq_url: Option<String>,
) -> QueueInfo {
    let names = [
        QueueAttributeName::VisibilityTimeout,
        QueueAttributeName::RedrivePolicy,
    ];
    let attributes = admin
        .attributes(main_url, &names)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "reading the queue's attributes failed; assuming defaults");
            Default::default()
        });
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
            Some((account, name)) => match admin.queue_url(&account, &name).await {
                Ok(url) => {
                    tracing::info!(dlq_url = %url, "found the dead-letter queue from the RedrivePolicy");
                    Some(url)
                }
                Err(error) => {
                    tracing::warn!(%error, "finding the DLQ's URL failed");
                    None
                }
            },
            None => {
                tracing::warn!(
                    "the queue has no RedrivePolicy and DLQ_URL is not set: poison messages cannot be moved to a DLQ"
                );
                None
            }
        },
    };
    QueueInfo {
        url: main_url.to_owned(),
        visibility,
        dlq_url,
    }
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
    use crate::testing::admin::FakeAdmin;

    const MAIN: &str = "http://sqs/000000000000/hooks";

    #[tokio::test]
    async fn reads_the_visibility_and_finds_the_dlq_by_its_redrive_policy() {
        let admin = FakeAdmin::default();
        admin.set(MAIN, QueueAttributeName::VisibilityTimeout, "120");
        admin.set(
            MAIN,
            QueueAttributeName::RedrivePolicy,
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:hooks-dlq","maxReceiveCount":"5"}"#,
        );
        admin.state().urls.insert(
            "000000000000/hooks-dlq".into(),
            "http://sqs/000000000000/hooks-dlq".into(),
        );
        let info = discover(&admin, MAIN, None).await;
        assert_eq!(info.visibility, Duration::from_secs(120));
        assert_eq!(
            info.dlq_url.as_deref(),
            Some("http://sqs/000000000000/hooks-dlq")
        );
    }

    #[tokio::test]
    async fn a_given_dlq_wins_and_an_unreadable_queue_means_defaults() {
        let admin = FakeAdmin::default();
        admin.state().failing = true;
        let info = discover(&admin, MAIN, Some("http://sqs/given-dlq".into())).await;
        assert_eq!(info.visibility, DEFAULT_VISIBILITY);
        assert_eq!(info.dlq_url.as_deref(), Some("http://sqs/given-dlq"));
        // Not asked for a URL it was given.
        assert!(
            admin
                .state()
                .calls
                .iter()
                .all(|(op, _)| *op != "GetQueueUrl")
        );
        let info = discover(&admin, MAIN, None).await;
        assert_eq!(info.dlq_url, None);
    }

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
