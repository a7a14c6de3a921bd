"""Top functions by self time from a py-spy speedscope profile."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def _label(frame: dict[str, object]) -> str:
    file = str(frame.get("file", ""))
    for marker in ("site-packages/", "/main/", "/lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{frame.get('name')} ({file})"


def top_self(path: Path, limit: int = 15) -> list[tuple[str, float, float]]:
    """(function, self %, total %) of the ``limit`` functions with most self time."""
    doc = json.loads(path.read_text())
    labels = [_label(f) for f in doc["shared"]["frames"]]
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    weight_sum = 0.0
    for prof in doc["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=True):
            if not stack:
                continue
            weight_sum += weight
            own[labels[stack[-1]]] += weight
            for name in {labels[i] for i in stack}:
                total[name] += weight
    if not weight_sum:
        return []
    return [
        (name, 100 * w / weight_sum, 100 * total[name] / weight_sum)
        for name, w in own.most_common(limit)
    ]


def format_top(rows: list[tuple[str, float, float]]) -> str:
    lines = [f"{'self%':>6} {'total%':>7}  function (file)"]
    lines += [f"{s:6.1f} {t:7.1f}  {name}" for name, s, t in rows]
    return "\n".join(lines)
