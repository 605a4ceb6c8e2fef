"""A real Prometheus scrapes the kit's /metrics; PromQL through its HTTP API sees what the test sent.

Also checks the Grafana dashboard: every expression parses in Prometheus and names only contract metrics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from tests.serve.prometheus_server import (
    ENERGY_PHASES,
    REQUEST_OUTCOMES,
    SUPPORTKIT_METRICS,
    PrometheusServer,
    free_port,
    series_names,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "supportkit" / "dashboards" / "supportkit.json"
SCRAPE_LABELS = {"__name__", "job", "instance"}


# --- the helper on its own, against a prometheus_client exporter in this process ---------------------


@pytest.fixture(scope="module")
def exporter_and_prometheus(tmp_path_factory):
    registry = CollectorRegistry()
    hits = Counter("probe_hits", "Test counter", ["kind"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    prom = PrometheusServer([f"127.0.0.1:{port}"], tmp_path_factory.mktemp("prometheus")).start()
    yield hits, prom
    prom.stop()
    server.shutdown()
    thread.join(10)


def test_prometheus_helper_scrapes_a_target(exporter_and_prometheus):
    hits, prom = exporter_and_prometheus
    hits.labels(kind="a").inc(3)
    hits.labels(kind="b").inc()
    prom.wait_scraped()
    result = prom.wait_for('probe_hits_total{kind="a"}', lambda r: r and float(r[0]["value"][1]) == 3)
    assert float(result[0]["value"][1]) == 3
    assert prom.values("sum by (kind) (probe_hits_total)", by="kind") == {"a": 3.0, "b": 1.0}


def test_prometheus_helper_reports_promql_errors(exporter_and_prometheus):
    _, prom = exporter_and_prometheus
    with pytest.raises(Exception, match="bad_data"):
        prom.query("sum by (kind (probe_hits_total)")


# --- the dashboard -----------------------------------------------------------------------------------

GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s", "$adapter": ".*"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset", "inf", "nan"}


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel."""
    data = json.loads(DASHBOARD.read_text())
    panels = data["panels"] + [p for row in data["panels"] for p in row.get("panels", [])]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def promql_selectors(expr: str) -> tuple[set[str], dict[str, set[str]], set[str]]:
    """(metric names, labels matched per metric, labels grouped on) of a PromQL expression."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    matched: dict[str, set[str]] = {}
    for name, body in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^}]*)\}", text):
        matched.setdefault(name, set()).update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))
    grouped = set()
    for body in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouped.update(x.strip() for x in body.split(",") if x.strip())
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    names = {m.group(1) for m in re.finditer(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(\s*\()?", bare)
             if not m.group(2) and m.group(1).lower() not in PROMQL_KEYWORDS}
    return names, matched, grouped


def test_promql_selector_parser_finds_names_and_labels():
    names, matched, grouped = promql_selectors(
        'histogram_quantile(0.9, sum by (le, adapter) (rate(x_bucket{adapter=~"a|b", le!=""}[5m]))) / on (adapter) y offset 5m'
    )
    assert names == {"x_bucket", "y"} and matched == {"x_bucket": {"adapter", "le"}} and grouped == {"le", "adapter"}


def test_dashboard_names_only_contract_metrics_and_labels():
    known = series_names()
    expressions = dashboard_expressions()
    used: set[str] = set()
    for title, expr in expressions:
        names, matched, grouped = promql_selectors(expr)
        assert names, f"{title}: no metric in {expr}"
        unknown = names - set(known)
        assert not unknown, f"{title}: {sorted(unknown)} not in the metric contract"
        used |= {known[n] for n in names}
        allowed = SCRAPE_LABELS | {"le"} | {lab for n in names for lab in SUPPORTKIT_METRICS[known[n]][1]}
        for name, labels in matched.items():
            own = SCRAPE_LABELS | set(SUPPORTKIT_METRICS[known[name]][1]) | ({"le"} if name.endswith("_bucket") else set())
            assert labels <= own, f"{title}: {name} has no label {sorted(labels - own)}"
        assert grouped <= allowed, f"{title}: grouped on unknown labels {sorted(grouped - allowed)}"
    # What the dashboard is for: traffic, latency, TTFT, tokens, energy per request/token, idle, adapters.
    for metric in ("supportkit_requests_total", "supportkit_request_duration_seconds",
                   "supportkit_time_to_first_token_seconds", "supportkit_generated_tokens_total",
                   "supportkit_request_energy_joules", "supportkit_energy_joules_total",
                   "supportkit_idle_energy_joules_total", "supportkit_adapters_loaded"):
        assert metric in used, f"the dashboard shows nothing of {metric}"
    variable = json.loads(DASHBOARD.read_text())["templating"]["list"][1]["query"]["query"]
    assert re.fullmatch(r"label_values\((\w+), adapter\)", variable).group(1) in known


def test_dashboard_panels_fit_the_grid_without_overlap():
    data = json.loads(DASHBOARD.read_text())
    cells: dict[tuple[int, int], str] = {}
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in data["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]


def test_dashboard_expressions_parse_in_prometheus(exporter_and_prometheus):
    _, prom = exporter_and_prometheus
    for title, expr in dashboard_expressions():
        for var, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, f"{title}: unknown Grafana variable in {expr}"
        prom.query(expr)  # raises with Prometheus's parse error


# --- the kit's server --------------------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """The server's /metrics now, as {(series name, sorted labels): value}."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def success_count(samples: dict, adapter: str) -> float:
    key = ("supportkit_requests_total", (("adapter", adapter), ("outcome", "success")))
    return samples.get(key, 0.0)


@pytest.fixture(scope="module")
def scraped_server(live_server, tmp_path_factory):
    prom = PrometheusServer([f"127.0.0.1:{live_server.port}"], tmp_path_factory.mktemp("prometheus-kit")).start()
    yield live_server, prom
    prom.stop()


SENT = {"support-a": 3, "support-b": 2}


def test_prometheus_sees_requests_and_energy_by_adapter(scraped_server):
    from openai import OpenAI

    server, prom = scraped_server
    prom.wait_scraped()
    before = scrape(server.url)  # the server is shared: count from what it had already served
    client = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    for adapter, n in SENT.items():
        for i in range(n):
            reply = client.chat.completions.create(
                model=adapter, max_tokens=6,
                messages=[{"role": "user", "content": f"My fibre box blinks red ({i}). What should I do?"}])
            assert reply.choices[0].message.content is not None
    expected = {a: success_count(before, a) + n for a, n in SENT.items()}

    counts_q = 'sum by (adapter) (supportkit_requests_total{outcome="success", adapter=~"support-a|support-b"})'
    prom.wait_for(counts_q, lambda r: {x["metric"]["adapter"]: float(x["value"][1]) for x in r} == expected)
    assert prom.values(counts_q, by="adapter") == expected

    per_request = prom.values(
        'sum by (adapter) (supportkit_request_energy_joules_sum{adapter=~"support-a|support-b"})'
        ' / sum by (adapter) (supportkit_request_energy_joules_count{adapter=~"support-a|support-b"})',
        by="adapter")
    assert set(per_request) == set(SENT), per_request
    assert all(j > 0 for j in per_request.values()), per_request
    observed = prom.values('sum by (adapter) (supportkit_request_energy_joules_count{adapter=~"support-a|support-b"})',
                           by="adapter")
    assert all(observed[a] >= n for a, n in SENT.items()), observed

    sources = prom.values("sum by (source) (supportkit_energy_joules_total)", by="source")
    assert sources and set(sources) <= {"nvml", "rapl", "estimate"}, sources
    phases = prom.values('sum by (phase) (supportkit_energy_joules_total{adapter="support-a"})', by="phase")
    assert set(phases) <= set(ENERGY_PHASES) and sum(phases.values()) > 0, phases


def test_scraped_metrics_follow_the_contract(scraped_server):
    """After traffic, every contract metric (bar handoffs, which needs a handoff) is there with its labels."""
    server, prom = scraped_server
    prom.wait_scraped()
    known = series_names()
    scraped = [n for n in prom.api("label/__name__/values") if n.startswith("supportkit_")]
    stray = [n for n in scraped if n not in known and not (n.endswith("_created") and any(
        m.startswith(n[: -len("_created")]) for m in SUPPORTKIT_METRICS))]
    assert not stray, f"series outside the metric contract: {stray}"
    present = {known[n] for n in scraped if n in known}
    missing = set(SUPPORTKIT_METRICS) - present - {"supportkit_handoffs_total"}
    assert not missing, f"not exposed after traffic: {sorted(missing)}"
    for metric, (kind, labels) in SUPPORTKIT_METRICS.items():
        name = metric + ("_count" if kind == "histogram" else "")
        for series in prom.api("series", **{"match[]": name}):
            extra = set(series) - SCRAPE_LABELS - set(labels)
            assert not extra, f"{name} has labels outside the contract: {sorted(extra)}"
            if "outcome" in series:
                assert series["outcome"] in REQUEST_OUTCOMES
            if "phase" in series:
                assert series["phase"] in ENERGY_PHASES
