"""Side-by-side summary of irctest JUnit reports (run.sh writes them):

    python3 tests/irc/summarize.py /tmp/irctest-chatnet.xml /tmp/irctest-ngircd.xml
    python3 tests/irc/summarize.py --failures /tmp/irctest-chatnet.xml

The first form prints a Markdown table, pass/fail/skip per test file for each report,
and the totals; `--failures` prints each failed test with the first lines of its
assertion message. Standard library only.
"""

from __future__ import annotations

import argparse
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path

OUTCOMES = ("passed", "failed", "skipped", "xfailed")


def outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """test id (file::Class::test) -> (outcome, message)."""
    found: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        classname = case.get("classname", "")
        module, _, cls = classname.rpartition(".")
        test_id = f"{module.replace('irctest.server_tests.', '')}.py::{cls}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfailed" if xfail else "skipped"), child.get("message") or ""
        found[test_id] = (outcome, message)
    return found


def table(reports: list[Path]) -> str:
    results = [outcomes(report) for report in reports]
    per_file: list[dict[str, Counter[str]]] = []
    for result in results:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for test_id, (outcome, _) in result.items():
            counts[test_id.split("::")[0]][outcome] += 1
        per_file.append(counts)
    files = sorted({name for counts in per_file for name in counts})
    header = "| file | " + " | ".join(f"{report.stem} pass/fail/skip" for report in reports) + " |"
    lines = [header, "|" + " --- |" * (len(reports) + 1)]

    def cell(counter: Counter[str]) -> str:
        text = f"{counter['passed']}/{counter['failed']}/{counter['skipped']}"
        return text + (f" (+{counter['xfailed']} xfail)" if counter["xfailed"] else "")

    for name in files:
        lines.append(f"| {name} | " + " | ".join(cell(counts.get(name, Counter())) for counts in per_file) + " |")
    totals = [Counter(outcome for outcome, _ in result.values()) for result in results]
    lines.append("| **total** | " + " | ".join(f"**{cell(total)}** of {sum(total.values())}" for total in totals) + " |")
    return "\n".join(lines)


def failures(report: Path, lines: int) -> str:
    out = []
    for test_id, (outcome, message) in outcomes(report).items():
        if outcome == "failed":
            text = [line for line in message.splitlines() if line.strip()]
            short = [line for line in text if re.match(r"^E\s", line)] or text
            out.append(f"## {test_id}\n" + "\n".join(short[:lines]))
    return "\n\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--failures", action="store_true", help="list failures of the first report")
    parser.add_argument("--lines", type=int, default=12)
    args = parser.parse_args()
    print(failures(args.reports[0], args.lines) if args.failures else table(args.reports))


if __name__ == "__main__":
    main()
