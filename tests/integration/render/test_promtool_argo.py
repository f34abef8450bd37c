"""Argo's canary latency check, evaluated by Debian's real `promtool test rules` on ingress metrics:
it judges by the local engine's rule (spec `Analysis.p99_limit`: the canary's p99 at most
`max_p99_ratio` x the stable's + `p99_margin_ms`, in the same window), with the same numbers.

examples/apricode (production, NGINX) renders the AnalysisTemplate; its `p99-ratio` query, with the
Services filled in as Argo fills its arguments, is evaluated on histograms whose requests all fall
in one bucket (p99 then interpolates to 99 % of the way through it, as Prometheus computes it). The
value must be the canary's p99 less the rule's limit in seconds: above 0 fails, at most 0 passes,
no value (too few requests on either side) is inconclusive. A missing promtool fails these tests.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shipyard.render._argo import render_argo
from shipyard.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NGINX_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
CANARY, STABLE = "app-canary", "app"

pytestmark = pytest.mark.integration


def _p99_check() -> tuple[str, str]:
    """The AnalysisTemplate's p99-ratio query with Argo's arguments filled in, and its condition."""
    stack = load_spec(ROOT / "examples" / "apricode" / "shipyard.yaml").stack("production")
    template = next(o for o in render_argo(stack, "app") if o["kind"] == "AnalysisTemplate")
    metric = next(m for m in template["spec"]["metrics"] if m["name"] == "p99-ratio")
    query = metric["provider"]["prometheus"]["query"]
    query = query.replace("{{args.stable-service}}", STABLE).replace("{{args.service}}", CANARY)
    return query, metric["successCondition"]


def _series(service: str, upper: float, per_15s: int) -> list[dict[str, str]]:
    """NGINX's request counter and duration histogram of `service`: `per_15s` requests every 15 s,
    each taking between the bucket below `upper` and `upper`."""
    selector = f'namespace="production",service="{service}"'
    series = [{"series": f"nginx_ingress_controller_requests{{{selector}}}", "values": f"0+{per_15s}x40"}]
    for le in (*NGINX_BUCKETS, "+Inf"):
        step = per_15s if le == "+Inf" or float(le) >= upper else 0
        series.append(
            {
                "series": f'nginx_ingress_controller_request_duration_seconds_bucket{{{selector},le="{le}"}}',
                "values": f"0+{step}x40",
            }
        )
    return series


def _p99_s(upper: float) -> float:
    """The p99 Prometheus interpolates when every request fell in the bucket ending at `upper`."""
    lower = max((le for le in NGINX_BUCKETS if le < upper), default=0.0)
    return lower + (upper - lower) * 0.99


@pytest.mark.parametrize(
    ("canary_upper", "stable_upper", "stable_per_15s", "verdict"),
    [
        (0.5, 0.1, 15, "fail"),  # a canary ~400 ms slower than a ~100 ms stable
        (0.1, 0.1, 15, "pass"),  # as fast as the stable
        (0.25, 0.1, 15, "fail"),  # 248.5 ms against a 99.5 ms stable: over 2x + the 25 ms margin
        (0.025, 0.005, 15, "pass"),  # 5x a 5 ms stable, but within 2x + the 25 ms margin
        (0.5, 0.1, 1, "inconclusive"),  # the stable served 4 requests in the window, < min_requests
    ],
)
def test_the_canary_p99_check_applies_the_local_engines_rule(
    canary_upper: float, stable_upper: float, stable_per_15s: int, verdict: str, tmp_path: Path
) -> None:
    query, success = _p99_check()
    assert success == "len(result) > 0 && result[0] <= 0"
    policy = load_spec(ROOT / "examples" / "apricode" / "shipyard.yaml").stack("production").rollout.analysis
    canary_p99, stable_p99 = _p99_s(canary_upper), _p99_s(stable_upper)
    excess = canary_p99 - policy.p99_limit(stable_p99 * 1000) / 1000  # the rule, in seconds
    expected = [] if verdict == "inconclusive" else [{"labels": "{}", "value": excess}]
    assert verdict == "inconclusive" or (excess > 0) == (verdict == "fail"), excess
    tests = {
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    *_series(CANARY, canary_upper, 15),
                    *_series(STABLE, stable_upper, stable_per_15s),
                ],
                "promql_expr_test": [{"expr": query, "eval_time": "5m", "exp_samples": expected}],
            }
        ],
    }
    (tmp_path / "argo.yml").write_text(yaml.safe_dump(tests))
    result = subprocess.run(
        [PROMTOOL, "test", "rules", "argo.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
