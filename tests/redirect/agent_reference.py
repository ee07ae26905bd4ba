"""An outside labelled reference for the user-agent classifier, and the accuracy table against it.

Sources, both read from the installed PyPI packages (no network in tests):

- Matomo device-detector's test fixtures (https://github.com/matomo-org/device-detector,
  Tests/fixtures, LGPL-3.0 data), as shipped in the ``device-detector`` wheel (6.5.1, the Python
  port, under ``device_detector/tests/fixtures/upstream``): real user agents, each labelled with
  Matomo's device type, OS and browser. Classes: phone (Matomo's smartphone, phablet and feature
  phone) is our ``mobile``; tablet, desktop, tv, console; bot (``bots.yml``). The client-hints
  files are left out (their label depends on headers the edge does not read).
- The crawler-user-agents list (https://github.com/monperrus/crawler-user-agents, MIT), the
  ``crawler-user-agents`` wheel (1.67.0): each pattern's example ``instances``.

Matomo's fixtures are split in two halves by file (``smartphone-3.yml`` odd, ``tablet-4.yml`` even;
the one-file classes by position): the even half was looked at while writing the classifier's
rules, the odd half was not, and the test asserts on the held-out odd half.

``python -m tests.redirect.agent_reference`` prints the table (both halves);
``python -m tests.redirect.agent_reference --errors tv --half even`` lists the user agents of a class
H0p gets wrong (and those it wrongly puts in the class) on one half: study the even half only, so the
odd half stays a fair measure.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, cast

import yaml_rs

from redirect.agent import normalise_browser, normalise_os
from redirect.visitor_agent import VisitorAgent, classify

CLASSES = ("mobile", "tablet", "desktop", "tv", "console", "bot")
_MATOMO_TYPES = {
    "smartphone": "mobile", "phablet": "mobile", "feature phone": "mobile", "tablet": "tablet",
    "desktop": "desktop", "tv": "tv", "console": "console",
}  # fmt: skip
_ONE_FILE = ("bots.yml", "console.yml", "desktop.yml")
# Matomo's OS and browser names where uap-core spells the same thing differently (spelling only:
# Matomo's "Fire OS" or "HarmonyOS" read as "Android" by uap-core stay disagreements)
_OS_NAMES = {"mac": "macos", "gnu/linux": "linux", "ipados": "ios", "windowsmobile": "windowsphone"}
_BROWSER_NAMES = {
    "internet explorer": "ie", "samsung browser": "samsung internet", "microsoft edge": "edge",
    "android browser": "android", "mi browser": "miuibrowser", "silk": "amazon silk",
    "vivo browser": "vivobrowser", "heytapbrowser": "heytap browser", "qtwebengine": "qt web engine",
    "puffin web browser": "puffin", "openwave browser": "up.browser", "dolphin": "dolfin",
    "yandex browser lite": "yandex browser", "uc browser turbo": "uc browser",
}  # fmt: skip
_BROWSER_SAME = {("safari", "safari ui/wkwebview"), ("android", "safari"), ("chrome webview", "chrome")}


@dataclass(frozen=True)
class Labelled:
    ua: str
    device: str  # our class
    os: str  # Matomo's OS name ("" when none)
    os_major: str
    browser: str  # Matomo's browser name ("" when the client is an app, not a browser)
    held_out: bool


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    assert spec is not None and spec.submodule_search_locations, f"{name} is not installed (pip install -e '.[dev]')"
    return Path(next(iter(spec.submodule_search_locations)))


def matomo_fixtures() -> Iterator[Labelled]:
    """Matomo's labelled user agents in our six classes (other device types are left out)."""
    folder = _package_dir("device_detector") / "tests" / "fixtures" / "upstream"
    for path in sorted(folder.glob("*.yml")):
        if path.name.startswith("clienthints"):
            continue
        number = re.search(r"-(\d+)\.yml$", path.name)
        entries = cast(list[dict[str, Any]], yaml_rs.loads(path.read_text("utf-8")))
        for index, entry in enumerate(entries):
            ua = entry.get("user_agent")
            if not isinstance(ua, str):
                continue
            if path.name == "bots.yml":
                device = "bot"
            else:
                device = _MATOMO_TYPES.get(((entry.get("device") or {}).get("type") or ""), "")
                if not device:
                    continue
            part = index if path.name in _ONE_FILE else int(number.group(1)) if number else 0
            os_ = entry.get("os") or {}
            client = entry.get("client") or {}
            version = str(os_.get("version") or "")
            yield Labelled(
                ua=ua,
                device=device,
                os=str(os_.get("name") or "") if os_ else "",
                os_major=version.split(".")[0],
                browser=str(client.get("name") or "") if client.get("type") == "browser" else "",
                held_out=part % 2 == 1,
            )


def crawler_instances() -> list[str]:
    """Example user agents of the crawler-user-agents list: all bots."""
    data = json.loads((_package_dir("crawleruseragents") / "crawler-user-agents.json").read_text("utf-8"))
    return [ua for entry in data for ua in entry.get("instances", [])]


@dataclass
class Row:
    name: str
    count: int
    agreed: int

    @property
    def percent(self) -> float:
        return 100.0 * self.agreed / self.count if self.count else 0.0


def _same_os(ours: VisitorAgent, label: Labelled) -> bool:
    theirs = normalise_os(label.os)
    return normalise_os(ours.os) == _OS_NAMES.get(theirs, theirs) or (
        theirs in ("linux", "gnu/linux") and ours.os in ("Linux", "Ubuntu", "Debian", "Fedora")
    )


def _same_browser(ours: VisitorAgent, label: Labelled) -> bool:
    theirs = normalise_browser(label.browser)
    theirs = _BROWSER_NAMES.get(theirs, theirs)
    mine = normalise_browser(ours.browser)
    return mine == theirs or (theirs, mine) in _BROWSER_SAME


def accuracy_table(held_out: bool | None = True, agent: Callable[[str], VisitorAgent] = classify) -> list[Row]:
    """Per class: how many labelled user agents, how many H0p classifies the same way.

    Then OS family (people with an OS label), OS major version where both have one, browser family
    (people with a browser label), and known crawlers counted as people (lower is better).
    """
    counts: Counter[str] = Counter()
    agreed: Counter[str] = Counter()
    for label in matomo_fixtures():
        if held_out is not None and label.held_out != held_out:
            continue
        ours = agent(label.ua)
        counts[label.device] += 1
        agreed[label.device] += ours.device == label.device
        if label.device == "bot":
            continue
        if label.os:
            counts["os family"] += 1
            agreed["os family"] += _same_os(ours, label)
            if label.os_major and ours.os_version and _same_os(ours, label):
                counts["os major version"] += 1
                agreed["os major version"] += ours.os_version.split(".")[0] == label.os_major
        if label.browser and label.browser != "Unknown":
            counts["browser family"] += 1
            agreed["browser family"] += _same_browser(ours, label)
    rows = [Row(name, counts[name], agreed[name]) for name in (*CLASSES, "os family", "os major version")]
    rows.append(Row("browser family", counts["browser family"], agreed["browser family"]))
    crawlers = crawler_instances()
    rows.append(Row("crawlers counted as people", len(crawlers), sum(not agent(ua).bot for ua in crawlers)))
    return rows


def misclassified(
    device: str, held_out: bool, agent: Callable[[str], VisitorAgent] = classify
) -> list[tuple[str, str, str]]:
    """(Matomo's class, ours, user agent) for each user agent of one half that is ``device`` on one side only."""
    out = []
    for label in matomo_fixtures():
        if label.held_out != held_out:
            continue
        ours = agent(label.ua).device
        if (label.device == device) != (ours == device):
            out.append((label.device, ours, label.ua))
    return sorted(out)


def format_table(rows: list[Row], title: str) -> str:
    lines = [title, f"{'class':<28} {'reference':>9} {'H0p agrees':>10}"]
    lines += [f"{r.name:<28} {r.count:>9} {r.percent:>9.1f}%" for r in rows]
    return "\n".join(lines)


def _main() -> None:
    cli = argparse.ArgumentParser(description="Accuracy of H0p's user-agent classifier against Matomo's fixtures")
    cli.add_argument("--errors", metavar="CLASS", choices=CLASSES, help="list the misclassified user agents of a class")
    cli.add_argument("--half", choices=("even", "odd"), default="even", help="which half to list (default: even)")
    args = cli.parse_args()
    if args.errors:
        wrong = misclassified(args.errors, held_out=args.half == "odd")
        for theirs, ours, ua in wrong:
            print(f"matomo={theirs:<8} h0p={ours:<8} {ua}")
        missed = sum(theirs == args.errors for theirs, _, _ in wrong)
        print(f"{args.half} half: {missed} {args.errors} missed, {len(wrong) - missed} others called {args.errors}")
        return
    print(format_table(accuracy_table(held_out=True), "Matomo fixtures, held-out half (odd files)"))
    print()
    print(format_table(accuracy_table(held_out=False), "Matomo fixtures, half looked at while writing the rules"))


if __name__ == "__main__":
    _main()
