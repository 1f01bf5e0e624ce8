"""The load run (bench/load.py) in its quick mode: zero failures, figures reported, memory flat.

No timing is asserted: the figures are printed and go to docs/robustness.md
from a full run (``.venv/bin/python bench/load.py``). WTC_TEST_LONG=1 runs 8
clients for 60 s instead of 3 clients for 6 s.
"""

from __future__ import annotations

import json

from hostile_stack import MIB, load

#: How much any process's resident memory may grow over the run (after the warm-up).
FLAT_GROWTH_KIB = 64 * MIB


def test_the_load_run_has_no_failure_and_flat_memory(tmp_path, long_run):
    report = tmp_path / "load.json"
    arguments = ["--clients", "8", "--seconds", "60"] if long_run else ["--quick"]
    status = load.main([*arguments, "--json", str(report), "--log-dir", str(tmp_path / "logs")])
    summary = json.loads(report.read_text())
    assert status == 0 and summary["failures"] == 0, summary["failure_examples"]
    good = sum(row["statuses"].get("200", 0) for name, row in summary["per_kind"].items()
               if next(k for k in load.request_mix() if k.name == name).good)
    bad = summary["requests"] - good - summary["backpressure_503"]
    assert good >= 3 and bad >= 3, summary["statuses"]
    for key in ("p50", "p90", "p99"):
        assert summary["latency_ms"][key] > 0
    assert set(summary["memory_kib"]) == {"api", "backend1", "backend2"}
    for name, memory in summary["memory_kib"].items():
        growth = memory["after"]["VmRSS"] - memory["before"]["VmRSS"]
        assert growth < FLAT_GROWTH_KIB, f"{name} grew by {growth // 1024} MiB"
