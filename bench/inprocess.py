"""What the in-process benchmarks (alarms.py, cold.py) share: percentiles, and running one under
uvloop, printing its JSON result and saving it."""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any, Coroutine


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def run_and_save(main: Coroutine[Any, Any, dict], out: str | pathlib.Path) -> dict:
    """Run ``main`` on uvloop (as the server does), print its result as JSON and write it to ``out``."""
    try:
        import uvloop
        result = uvloop.run(main)
    except ImportError:  # pragma: no cover
        result = asyncio.run(main)
    text = json.dumps(result, indent=2)
    print(text)
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # bench/results/ is not in git
    out.write_text(text + "\n")
    return result
