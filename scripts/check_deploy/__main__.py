"""Runs the Python checks of docker/ and deploy/; run by scripts/check-deploy.sh.

  cd scripts && python -m check_deploy HELP_DIR

HELP_DIR holds the binaries' help texts (ingest.txt, worker-run.txt, worker-migrate.txt,
worker-redrive.txt, worker-healthcheck.txt, and worker-maintain.txt once the worker has that
subcommand); the `[env: NAME]` lines in them are the settings the binaries accept. Each check
prints `ok   NAME` or `FAIL NAME` with its reasons, then `note: ...` lines; the exit status
is the number of failed checks (0: all passed).

The checks live in ecs.py, cloudformation.py, tracing.py, containers.py and observability.py.
"""
import sys

from .cloudformation import (template_load_balancer_drains_like_ingest_and_never_exposes_metrics,
                             template_payload_bucket_is_private_encrypted_and_outlives_the_queues,
                             template_roles_are_least_privilege, template_scales_the_worker_on_backlog_per_task,
                             template_schedules_worker_maintain_like_the_one_off_tasks,
                             template_task_definitions_equal_the_json_ones,
                             template_worker_task_cap_keeps_the_connection_budget)
from .common import HELP, NOTES, load_help
from .containers import (compose_files_exist_and_env_names_are_settings,
                         compose_images_are_public_by_default_and_overridable_for_both_composes,
                         compose_structure_health_and_start_order, dockerfile_and_dockerignore_cover_the_workspace)
from .ecs import (task_definition_placeholders_are_stack_outputs, task_definitions_have_fargate_shape_timings_health_logs_and_labels,
                  task_definitions_match_the_ecs_api_model, task_definitions_set_exactly_the_settings_the_binaries_accept)
from .observability import metric_names_in_alerts_and_dashboard_exist
from .tracing import tracing_is_off_by_default_and_enable_tracing_adds_a_non_essential_collector

results = []


def check(fn):
    """Runs one check; it returns a list of problems (empty: passed)."""
    try:
        problems = fn()
    except Exception as error:  # a crash of a check is its failure, with the reason
        problems = [f"{type(error).__name__}: {error}"]
    results.append((fn.__name__, problems))
    print(("ok   " if not problems else "FAIL ") + fn.__name__.replace("_", " "), flush=True)
    for problem in problems:
        print(f"       {problem}", flush=True)


def main():
    HELP.update(load_help(sys.argv[1]))
    for fn in (task_definitions_match_the_ecs_api_model,
               task_definitions_set_exactly_the_settings_the_binaries_accept,
               task_definitions_have_fargate_shape_timings_health_logs_and_labels,
               task_definition_placeholders_are_stack_outputs,
               template_task_definitions_equal_the_json_ones,
               template_worker_task_cap_keeps_the_connection_budget,
               template_scales_the_worker_on_backlog_per_task,
               template_load_balancer_drains_like_ingest_and_never_exposes_metrics,
               template_roles_are_least_privilege,
               template_payload_bucket_is_private_encrypted_and_outlives_the_queues,
               template_schedules_worker_maintain_like_the_one_off_tasks,
               tracing_is_off_by_default_and_enable_tracing_adds_a_non_essential_collector,
               compose_structure_health_and_start_order,
               compose_files_exist_and_env_names_are_settings,
               compose_images_are_public_by_default_and_overridable_for_both_composes,
               dockerfile_and_dockerignore_cover_the_workspace,
               metric_names_in_alerts_and_dashboard_exist):
        check(fn)
    for note in NOTES:
        print(f"note: {note}", flush=True)
    return sum(1 for _, problems in results if problems)


if __name__ == "__main__":
    sys.exit(main())
