"""Checks of the observability files: every metric name in deploy/observability/alerts.yml and
grafana-dashboard.json is in the README's metrics table and emitted by the code; dashboard panel
ids are unique and every target has an expression. (promtool's checks run in check-deploy.sh.)
"""
import json
import re

from .common import DEPLOY, ROOT

def readme_metrics():
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z0-9_]+)`", section, re.M))


def source_metrics():
    found = set()
    for crate in ("shared", "ingest", "worker"):
        for path in (ROOT / crate / "src").rglob("*.rs"):
            found |= set(re.findall(r'"(webhook_[a-z0-9_]+)"', path.read_text()))
    return found


def metric_names_in_alerts_and_dashboard_exist():
    problems = []
    documented, emitted = readme_metrics(), source_metrics()
    files = [DEPLOY / "observability/alerts.yml", DEPLOY / "observability/grafana-dashboard.json"]
    for path in files:
        for metric in sorted(set(re.findall(r"\b(webhook_[a-z0-9_]+)", path.read_text()))):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            if base not in documented:
                problems.append(f"{path.name}: {metric} is not in the README's metrics table")
            if base not in emitted:
                problems.append(f"{path.name}: {metric} is not emitted by the code (no \"{base}\" in the sources)")
    dashboard = json.loads(files[1].read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("grafana-dashboard.json: panel ids are not unique")
    for panel in dashboard["panels"]:
        if panel["type"] != "row" and not all(t.get("expr") for t in panel.get("targets", [])):
            problems.append(f"grafana-dashboard.json: panel {panel['title']!r} has a target without expr")
    return problems
