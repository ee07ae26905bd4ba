"""wrk, the load generator of the HTTP benchmarks: one run, its summary parsed from a Lua ``done()``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Appended to every wrk script: prints one machine-readable line with the run's summary.
DONE_LUA = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def pinned(core: str) -> list[str]:
    """``taskset`` arguments that keep a process on ``core`` (none on a one-core machine)."""
    return ["taskset", "-c", core] if shutil.which("taskset") and len(os.sched_getaffinity(0)) > 1 else []


def run_wrk(script: Path, url: str, seconds: float, connections: int, core: str, env: dict[str, str]) -> WrkResult:
    """One wrk run of ``script`` (which must end with ``DONE_LUA``) against ``url``, pinned to ``core``."""
    argv = [*pinned(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "-s", str(script), url]
    out = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_RESULT "):
            data = json.loads(line.removeprefix("WRK_RESULT "))
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                errors=data["errors"],
            )
    raise RuntimeError(f"wrk printed no result (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
