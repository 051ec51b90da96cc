use super::*;
use crate::sqs::admin::MoveTask;
use crate::testing::admin::FakeAdmin;
use crate::testing::{REDRIVE_DLQ, REDRIVE_MAIN, redrive_args};

fn args() -> RedriveArgs {
    redrive_args(&["--max-per-second", "50"])
}

fn task(handle: Option<&str>, status: &str, moved: i64) -> MoveTask {
    MoveTask {
        handle: handle.map(str::to_owned),
        status: status.into(),
        moved,
        total: Some(10),
        failure_reason: (status == "FAILED").then(|| "AccessDenied".to_owned()),
        started_ms: Some(1_714_564_800_000),
    }
}

fn admin() -> FakeAdmin {
    let admin = FakeAdmin::default();
    admin.set(REDRIVE_MAIN, QueueAttributeName::QueueArn, "arn:main");
    admin.set(REDRIVE_DLQ, QueueAttributeName::QueueArn, "arn:dlq");
    admin
}

async fn redrive(admin: &FakeAdmin, args: &RedriveArgs) -> anyhow::Result<()> {
    by_task(
        admin,
        args,
        Duration::from_secs(1),
        &CancellationToken::new(),
    )
    .await
}

fn calls(admin: &FakeAdmin, operation: &str) -> usize {
    let state = admin.state();
    state
        .calls
        .iter()
        .filter(|(op, _)| *op == operation)
        .count()
}

#[tokio::test(start_paused = true)]
async fn moves_from_the_dlq_to_the_main_queue_until_the_task_completes() {
    let admin = admin();
    admin.state().listings = [
        // Before the start: nothing running.
        vec![task(None, "COMPLETED", 4)],
        vec![task(Some("task-1"), "RUNNING", 3)],
        // Finished: no handle any more, the newest entry for the source.
        vec![task(None, "COMPLETED", 10), task(None, "FAILED", 0)],
    ]
    .into();
    redrive(&admin, &args()).await.expect("completed");
    assert_eq!(
        admin.state().moves,
        vec![("arn:dlq".to_owned(), "arn:main".to_owned(), Some(50))]
    );
    assert_eq!(calls(&admin, "ListMessageMoveTasks"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_task_already_running_is_followed_not_started_again() {
    let admin = admin();
    admin.state().listings = [
        vec![task(Some("task-0"), "RUNNING", 1)],
        vec![task(Some("task-0"), "RUNNING", 5)],
        vec![task(None, "COMPLETED", 10)],
    ]
    .into();
    redrive(&admin, &args()).await.expect("completed");
    assert!(admin.state().moves.is_empty(), "no second task started");
    assert_eq!(calls(&admin, "ListMessageMoveTasks"), 3);
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_following_leaves_the_task_running() {
    let admin = admin();
    admin.state().listings = [vec![], vec![task(Some("task-1"), "RUNNING", 3)]].into();
    let stop = CancellationToken::new();
    let args = args();
    let following = by_task(&admin, &args, Duration::from_secs(1), &stop);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        stop.cancel();
    };
    let (result, ()) = tokio::join!(following, stopper);
    result.expect("a stop is not an error");
    let state = admin.state();
    assert!(state.cancelled.is_empty(), "the task is left running");
    assert_eq!(state.moves.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_move_is_an_error_with_its_reason() {
    let admin = admin();
    admin.state().listings = [vec![task(None, "FAILED", 0)]].into();
    let error = redrive(&admin, &args()).await.expect_err("failed");
    assert!(format!("{error:#}").contains("AccessDenied"), "{error:#}");
}

#[tokio::test(start_paused = true)]
async fn status_lists_and_moves_nothing() {
    let admin = admin();
    admin.state().listings = [vec![task(None, "COMPLETED", 10), task(None, "FAILED", 0)]].into();
    redrive(&admin, &redrive_args(&["--status"]))
        .await
        .expect("status");
    let state = admin.state();
    assert!(state.moves.is_empty() && state.cancelled.is_empty());
    assert_eq!(
        tasks::describe(&task(None, "FAILED", 0)),
        "FAILED: 0 of 10 moved, started 2024-05-01T12:00:00Z, failed: AccessDenied"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_stops_the_running_task_and_is_fine_without_one() {
    let admin = admin();
    admin.state().moved_at_cancel = 7;
    admin.state().listings = [
        vec![
            task(Some("task-9"), "RUNNING", 7),
            task(None, "COMPLETED", 10),
        ],
        vec![task(None, "COMPLETED", 10)],
    ]
    .into();
    redrive(&admin, &redrive_args(&["--cancel"]))
        .await
        .expect("cancelled");
    assert_eq!(admin.state().cancelled, vec!["task-9".to_owned()]);
    redrive(&admin, &redrive_args(&["--cancel"]))
        .await
        .expect("nothing running is not an error");
    assert_eq!(admin.state().cancelled.len(), 1);
    assert!(admin.state().moves.is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_dlq_and_no_arn_are_errors_that_say_so() {
    let admin = FakeAdmin::default();
    let mut no_dlq = args();
    no_dlq.dead_letters.dlq_url = None;
    let error = redrive(&admin, &no_dlq).await.expect_err("no dlq");
    assert!(format!("{error:#}").contains("DLQ_URL"), "{error:#}");
    let error = redrive(&admin, &args()).await.expect_err("no arn");
    assert!(
        format!("{error:#}").contains("has no QueueArn"),
        "{error:#}"
    );
    assert!(admin.state().moves.is_empty());
}

#[test]
fn action_flags_exclude_filters_and_each_other() {
    use clap::Parser as _;
    let full = [
        "worker",
        "redrive",
        "--queue-url",
        REDRIVE_MAIN,
        "--status",
        "--cancel",
    ];
    assert!(crate::config::Cli::try_parse_from(full).is_err());
    for line in [
        &["--status", "--source", "a"][..],
        &["--cancel", "--dry-run"],
    ] {
        assert!(redrive_args(line).check().is_err(), "{line:?}");
    }
    assert!(redrive_args(&["--status"]).check().is_ok());
    assert!(redrive_args(&["--reason", "x"]).scans());
    assert!(redrive_args(&["--dry-run"]).scans());
    assert!(!redrive_args(&["--status"]).scans());
}
