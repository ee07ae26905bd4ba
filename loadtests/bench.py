"""`make bench`: install the load tools, run every benchmark section, write loadtests/RESULTS.md.

    python -m loadtests.bench [SECTION ...]
    sections: edge api ingest analytics qr e2e rules agent webhooks capacity dashboard live (default: all)

Each section is a module ``loadtests.<name>_bench`` that prints a markdown section (a heading
and a table) on stdout and its progress on stderr. A section that fails is recorded as failed in
RESULTS.md and the run goes on; the exit code is then 1. When only some sections are named,
the others are kept from the previous RESULTS.md (each section carries the date it was measured).
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTIONS = (
    "edge", "api", "ingest", "analytics", "qr", "e2e", "rules", "agent", "webhooks", "capacity", "dashboard", "live",
)  # fmt: skip
TOOLS = {"wrk": "wrk", "nginx": "nginx", "taskset": "util-linux"}


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def install_tools() -> None:
    """apt-get the load generator and the reference server when missing (Debian packages)."""
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool)})
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def machine() -> list[str]:
    cpu = platform.processor() or "unknown"
    memory = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return [
        f"- Last run: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {cpu}, {memory} RAM",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
    ]


def run_section(name: str) -> tuple[str, bool]:
    module = f"loadtests.{name}_bench"
    log(f"running {module}")
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    proc = subprocess.run([sys.executable, "-m", module], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    output = proc.stdout.strip()
    if proc.returncode != 0:
        log(f"{module} failed with exit code {proc.returncode}")
        output = f"## {name}\n\n**Failed** (`python -m {module}` exited with {proc.returncode}).\n\n{output}"
    body = f"{output}\n\n_Measured {started}, load average {os.getloadavg()[0]:.1f} at the end._"
    return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->\n", proc.returncode == 0


def previous_sections() -> dict[str, str]:
    """Sections of the last RESULTS.md, by name, to keep those not measured this time."""
    if not RESULTS.exists():
        return {}
    text = RESULTS.read_text()
    pattern = re.compile(r"<!-- bench:(\w+) -->\n.*?<!-- /bench:\1 -->\n", re.DOTALL)
    return {m.group(1): m.group(0) for m in pattern.finditer(text)}


def main(argv: list[str] | None = None) -> int:
    wanted = list(argv if argv is not None else sys.argv[1:]) or list(SECTIONS)
    unknown = [w for w in wanted if w not in SECTIONS]
    if unknown:
        log(f"unknown sections {unknown}; known: {' '.join(SECTIONS)}")
        return 2
    present = [name for name in wanted if importlib.util.find_spec(f"loadtests.{name}_bench") is not None]
    for name in wanted:
        if name not in present:
            log(f"no loadtests/{name}_bench.py yet: section skipped")
    install_tools()
    header = ["# Benchmark results", "", "Written by `make bench` (loadtests/bench.py).", "", *machine(), ""]
    kept = previous_sections()
    sections: dict[str, str] = {}
    ok = True

    def write() -> None:
        ordered = [sections.get(name) or kept.get(name) for name in SECTIONS]
        RESULTS.write_text("\n".join(header + [text for text in ordered if text]))

    for name in present:
        text, passed = run_section(name)
        ok = ok and passed
        sections[name] = text
        # Written after every section: a long run that fails late still leaves what it measured.
        write()
    write()
    log(f"wrote {RESULTS.relative_to(ROOT)}")
    print(RESULTS.read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
