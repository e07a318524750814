"""Progress of many runs: a tqdm bar in an interactive terminal, plain 'k/N runs done' log lines in logs."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger("asym.sweep")


class RunsProgress:
    def __init__(self, total: int, desc: str = "sweep", unit: str = "runs"):
        self.total, self.done, self.bar, self.unit = total, 0, None, unit
        if sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit.rstrip("s"))

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            if note:
                self.bar.set_postfix_str(note)
        else:
            log.info("progress: %d/%d %s done%s", self.done, self.total, self.unit, f" ({note})" if note else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def text_bar(fraction: float, width: int = 40) -> str:
    """A static bar for reports (``asym-status``): ``[██████░░░░]``; ASCII when the terminal cannot do better."""
    full = "█" if (sys.stdout.encoding or "").lower().startswith("utf") else "#"
    empty = "░" if full == "█" else "."
    n = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + full * n + empty * (width - n) + "]"
