#!/usr/bin/env python3
"""Generate deploy/components/monitoring/prometheusrule.yaml from tokenservice.rules.yaml.

The rules file (what promtool checks and tests) is the source of truth; the
PrometheusRule's spec is that file's text indented under `spec:`, so the two
cannot drift apart in content. Standard library only.

    python3 deploy/monitoring/render_prometheusrule.py          # rewrite the PrometheusRule
    python3 deploy/monitoring/render_prometheusrule.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE / "tokenservice.rules.yaml"
TARGET = HERE.parent / "components" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/monitoring/tokenservice.rules.yaml by
# deploy/monitoring/render_prometheusrule.py: edit the rules file, then rerun
# the script. deploy/validate fails when this file is out of date.
#
# The "release" label must match your Prometheus' ruleSelector
# (kube-prometheus-stack's default is the Helm release name).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: tokenservice
  labels:
    release: kube-prometheus-stack
spec:
"""


def render() -> str:
    body: list[str] = []
    for line in RULES.read_text().splitlines():
        if line.startswith("#") and not body:
            continue  # the rules file's own header comment
        body.append(("  " + line) if line.strip() else "")
    while body and not body[0]:
        body.pop(0)
    if not body or not body[0].startswith("  groups:"):
        raise SystemExit(f"{RULES}: expected a top-level 'groups:' after the header comment")
    return HEADER + "\n".join(body) + "\n"


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != rendered:
            print(
                f"{TARGET} is out of date; run: python3 {Path(__file__).relative_to(HERE.parent.parent)}",
                file=sys.stderr,
            )
            return 1
        print(f"{TARGET.name} matches {RULES.name}")
        return 0
    TARGET.write_text(rendered)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
