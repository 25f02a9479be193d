"""Folds a partial run (BENCH_ONLY) into the figures of the previous one, so re-measuring a few groups does not
drop the others from BENCHMARKS.md and benchmarks/results.json."""

import json


def earlier(out):
    """The previous run's results.json, or None."""
    path = out / "results.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fold(old, rows, notes, profile, commands, groups):
    """The new run's figures with those of `old` it did not measure again: rows of every row group this run
    produced replace the old ones; old notes stay unless they name a group run again or share a subject (the
    text before the colon) with a new note; the old profile stays when this run made none."""
    measured = {r["group"] for r in rows}
    kept_rows = [r for r in old.get("rows", []) if r["group"] not in measured]
    subjects = {n.split(":", 1)[0] for n in notes}
    kept_notes = [n for n in old.get("notes", [])
                  if n.split(":", 1)[0] not in subjects and not any(n.startswith(g) for g in groups)]
    if not profile:
        profile = [(p["instructions"], p["percent"], p["function"]) for p in old.get("profile", [])]
    seen = {tuple(str(x) for x in c) for c in commands}
    old_commands = [c for c in old.get("commands", []) if tuple(c) not in seen]
    return kept_rows + rows, notes + kept_notes, profile, commands + old_commands


def earlier_runs(old, groups):
    """The runs whose figures `old` still holds once `groups` are measured again: each with the groups it
    measured, its date and commit."""
    runs = old["plan"].get("runs") or [{"groups": old["plan"]["groups"], "date_utc": old["machine"]["date_utc"],
                                        "commit": old["plan"].get("commit")}]
    kept = []
    for run in runs:
        left = [g for g in run["groups"] if g not in groups]
        if left:
            kept.append({**run, "groups": left})
    return kept
