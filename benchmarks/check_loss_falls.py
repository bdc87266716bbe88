"""Did a training run's loss fall? Reads a run's metrics.jsonl (our trainer's step records).

    python benchmarks/check_loss_falls.py runs/x/metrics.jsonl [--window 20] [--json FILE]

The ATSS warm-up and TAL optimise different losses (binary focal targets vs the soft t̂, normalised
differently), so the total loss jumps at the switch; each phase is judged on its own: the mean loss
of its last ``window`` steps must be below that of its first ``window`` steps. A phase with fewer than
2 x window steps is reported and not judged. Exit status 1 when a judged phase did not fall.
"""
from __future__ import annotations

import argparse
import json
import math
import sys


def phase_losses(path: str) -> dict[str, list[float]]:
    """{phase: [loss per step, in order]} from a metrics.jsonl."""
    phases: dict[str, list[float]] = {}
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "step":
                phases.setdefault(record.get("phase", "all"), []).append(float(record["loss"]))
    return phases


def judge(phases: dict[str, list[float]], window: int) -> list[dict]:
    rows = []
    for phase, losses in phases.items():
        row = dict(phase=phase, steps=len(losses), finite=all(math.isfinite(v) for v in losses))
        if len(losses) >= 2 * window:
            row["first_mean"] = sum(losses[:window]) / window
            row["last_mean"] = sum(losses[-window:]) / window
            row["fell"] = row["finite"] and row["last_mean"] < row["first_mean"]
        else:
            row["fell"] = None  # too few steps to judge
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics")
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    phases = phase_losses(args.metrics)
    if not phases:
        print(f"{args.metrics}: no step records", file=sys.stderr)
        return 1
    rows = judge(phases, args.window)
    for row in rows:
        if row["fell"] is None:
            print(f"  {row['phase']}: {row['steps']} steps, too few to judge (need {2 * args.window}); "
                  f"finite: {row['finite']}")
        else:
            print(f"  {row['phase']}: {row['steps']} steps, mean loss of the first {args.window} "
                  f"{row['first_mean']:.3f} -> last {args.window} {row['last_mean']:.3f}: "
                  f"{'falls' if row['fell'] else 'DOES NOT FALL'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(window=args.window, phases=rows), f, indent=2)
    bad = [r for r in rows if r["fell"] is False or not r["finite"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
