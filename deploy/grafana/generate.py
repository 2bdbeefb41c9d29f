#!/usr/bin/env python3
"""Writes the Grafana dashboards of this directory (tlsfleet-fleet.json, tlsfleet-control.json)
from the panel lists below: edit here, run `python3 deploy/grafana/generate.py`, commit both
(`--check` says whether they are current; the test suite runs it).
tests/tests/dashboards.rs checks that every metric and label they query exists on a running
control server and agent."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def panel(title, exprs, unit="short", kind="timeseries", description=""):
    """exprs: [(expr, legend)]"""
    return {
        "title": title,
        "type": kind,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}}
        if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": e, "legendFormat": l}
            for i, (e, l) in enumerate(exprs)
        ],
    }


def dashboard(uid, title, description, rows):
    panels, y, pid = [], 0, 1
    for row_title, row in rows:
        panels.append({"type": "row", "title": row_title, "id": pid, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        width = 24 // len(row)
        for i, p in enumerate(row):
            p = dict(p, id=pid, gridPos={"h": 8, "w": width, "x": i * width, "y": y})
            panels.append(p)
            pid += 1
        y += 8
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus",
                        "version": "1.0.0"}],
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["tlsfleet"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{"name": "DS_PROMETHEUS", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "annotations": {"list": []},
        "panels": panels,
    }


FLEET = dashboard(
    "tlsfleet-fleet",
    "tlsfleet: fleet",
    "The edge agents: sync state, revision lag, convergence, NACKs, handshakes, refusals.",
    [
        ("Sync", [
            panel("Agents by sync state",
                  [('sum by (state) (tlsfleet_agent_sync_state)', "{{state}}")],
                  description="Each agent reports 1 for its current state."),
            panel("Agents by phase (control servers' view)",
                  [('sum by (phase) (tlsfleet_control_agents)', "{{phase}}")]),
            panel("Revisions behind the newest change",
                  [('scalar(max(tlsfleet_control_index_last_change_revision))'
                    ' - max by (instance) (tlsfleet_agent_applied_revision)', "{{instance}}")],
                  description="How far each agent's applied revision is behind the newest "
                              "policy change (0 when current)."),
        ]),
        ("Convergence", [
            panel("Change to last ACK (p50, p99)",
                  [('histogram_quantile(0.5, sum by (le) '
                    '(rate(tlsfleet_control_convergence_seconds_bucket[5m])))', "p50"),
                   ('histogram_quantile(0.99, sum by (le) '
                    '(rate(tlsfleet_control_convergence_seconds_bucket[5m])))', "p99")],
                  unit="s",
                  description="From a change reaching a control server's index to the ACK of "
                              "the last of its agents."),
            panel("Oldest change not yet everywhere",
                  [('max by (instance) (tlsfleet_control_rollout_oldest_pending_seconds)',
                    "{{instance}}")], unit="s"),
            panel("NACKs",
                  [('sum by (instance) (increase(tlsfleet_agent_nacks_total[5m]))',
                    "{{instance}}")],
                  description="Revisions an agent could not apply in full (tlsfleetctl agents "
                              "names the buckets)."),
        ]),
        ("Handshakes", [
            panel("Handshakes by version and suite",
                  [('sum by (version, suite) '
                    '(rate(tlsfleet_agent_handshakes_total{outcome="ok"}[5m]))',
                    "{{version}} {{suite}}")], unit="ops"),
            panel("Failed handshakes by outcome",
                  [('sum by (outcome) '
                    '(rate(tlsfleet_agent_handshakes_total{outcome!="ok"}[5m]))', "{{outcome}}")],
                  unit="ops"),
            panel("Connections refused before TLS, by reason",
                  [('sum by (reason) (rate(tlsfleet_agent_handshake_refusals_total[5m]))',
                    "{{reason}}")], unit="ops"),
        ]),
        ("Requests", [
            panel("Requests refused by status",
                  [('sum by (status) (rate(tlsfleet_agent_requests_refused_total[5m]))',
                    "{{status}}")], unit="reqps",
                  description="403: refused by the bucket's current policy."),
            panel("Requests served and upstream errors",
                  [('sum(rate(tlsfleet_agent_requests_served_total[5m]))', "served"),
                   ('sum(rate(tlsfleet_agent_upstream_errors_total[5m]))', "upstream errors")],
                  unit="reqps"),
            panel("Open connections",
                  [('sum by (instance) (tlsfleet_agent_open_connections)', "{{instance}}")]),
        ]),
        ("Agents", [
            panel("Policies and distinct TLS configs",
                  [('max(tlsfleet_agent_policies_loaded)', "policies"),
                   ('max(tlsfleet_agent_distinct_configs)', "distinct configs")]),
            panel("Days until the certificate expires",
                  [('min by (instance) (tlsfleet_agent_certificate_not_after_timestamp_seconds'
                    ' - time()) / 86400', "{{instance}}")], unit="d"),
            panel("Snapshots and deltas received",
                  [('sum(rate(tlsfleet_agent_sync_snapshots_total[5m]))', "snapshots"),
                   ('sum(rate(tlsfleet_agent_sync_deltas_total[5m]))', "deltas")], unit="ops"),
        ]),
    ],
)

FAILED = '5..|Internal|Unknown|Unavailable|DataLoss|DeadlineExceeded'

CONTROL = dashboard(
    "tlsfleet-control",
    "tlsfleet: control plane",
    "The control servers: store health and latency, requests, Sync streams, the registry.",
    [
        ("Store", [
            panel("etcd members up",
                  [('min by (endpoint) (tlsfleet_control_store_member_up)', "{{endpoint}}")]),
            panel("etcd call latency p99 by member",
                  [('histogram_quantile(0.99, sum by (le, endpoint) '
                    '(rate(tlsfleet_control_store_call_duration_seconds_bucket[5m])))',
                    "{{endpoint}}")], unit="s"),
            panel("etcd call latency p99 by operation",
                  [('histogram_quantile(0.99, sum by (le, op) '
                    '(rate(tlsfleet_control_store_call_duration_seconds_bucket[5m])))',
                    "{{op}}")], unit="s"),
            panel("etcd calls failed",
                  [('sum by (endpoint) (delta(tlsfleet_control_store_member_failed_calls[5m]))',
                    "{{endpoint}}")]),
        ]),
        ("Requests", [
            panel("Requests by method",
                  [('sum by (via, method) (rate(tlsfleet_control_requests_total[5m]))',
                    "{{via}} {{method}}")], unit="reqps"),
            panel("Errors by status",
                  [('sum by (via, method, status) '
                    '(rate(tlsfleet_control_requests_total{status!~"200|Ok"}[5m]))',
                    "{{via}} {{method}} {{status}}")], unit="reqps"),
            panel("Server-side failures",
                  [('sum by (instance) (rate(tlsfleet_control_requests_total{status=~"'
                    + FAILED + '"}[5m]))', "{{instance}}")], unit="reqps"),
            panel("Latency p99 by method",
                  [('histogram_quantile(0.99, sum by (le, via, method) '
                    '(rate(tlsfleet_control_request_duration_seconds_bucket[5m])))',
                    "{{via}} {{method}}")], unit="s"),
        ]),
        ("Fleet", [
            panel("Sync streams",
                  [('sum by (instance) (tlsfleet_control_sync_streams)', "{{instance}}")]),
            panel("Agents in the registry",
                  [('max(tlsfleet_control_registry_agents)', "agents")]),
            panel("Changes waiting for an ACK",
                  [('sum by (instance) (tlsfleet_control_rollout_pending_revisions)',
                    "{{instance}}")]),
            panel("Deltas encoded and sent",
                  [('sum(rate(tlsfleet_control_sync_deltas_encoded_total[5m]))', "encoded"),
                   ('sum(rate(tlsfleet_control_sync_shared_deltas_sent_total[5m]))', "sent")],
                  unit="ops"),
        ]),
        ("Index", [
            panel("Policies", [('max(tlsfleet_control_index_policies)', "policies")],
                  kind="stat"),
            panel("Index loaded", [('min(tlsfleet_control_index_loaded)', "loaded")],
                  kind="stat"),
            panel("Revisions",
                  [('max(tlsfleet_control_index_revision)', "index"),
                   ('max(tlsfleet_control_index_last_change_revision)', "last change")]),
            panel("Changes abandoned before their last ACK",
                  [('sum(increase(tlsfleet_control_convergence_abandoned_total[1h]))',
                    "abandoned")]),
        ]),
    ],
)

# --check: exit 1 if the committed files differ from what this script writes.
stale = []
for name, board in [("tlsfleet-fleet.json", FLEET), ("tlsfleet-control.json", CONTROL)]:
    text = json.dumps(board, indent=2) + "\n"
    path = HERE / name
    if "--check" in sys.argv[1:]:
        if not path.exists() or path.read_text() != text:
            stale.append(name)
    else:
        path.write_text(text)
if stale:
    sys.exit(f"stale: {', '.join(stale)}: run python3 deploy/grafana/generate.py")
