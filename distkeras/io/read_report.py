"""What a ROOT read covered and what it left out: the files and entries planned, and every input
skipped under ``on_bad_file="skip"`` (whole files found bad while planning, entry ranges that
failed in executors), with the events lost.

Example::

    df = read_root(spark, "data/*.root", "Delphes", on_bad_file="skip", report=report)
    df.count(); print(report.summary())
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
MiB = 1 << 20


@dataclass
class SkippedInput:
    """A file (or entry range of one) left out under ``on_bad_file="skip"``."""

    path: str
    reason: str
    entries_lost: int | None      # None: the file could not be opened, its size is unknown
    entry_range: tuple[int, int] | None = None


@dataclass
class ReadReport:
    """What a ROOT read covered and what it left out.

    ``skipped`` is filled while planning; ``runtime_skipped`` (entry ranges that failed in
    executors) is complete once a Spark action has read the whole DataFrame.
    """

    files: list[str] = field(default_factory=list)
    entries: int = 0
    bytes_estimate: int = 0
    partitions: int = 0
    skipped: list[SkippedInput] = field(default_factory=list)
    _runtime: Any = field(default=None, repr=False)   # a Spark accumulator of tuples

    @property
    def runtime_skipped(self) -> list[SkippedInput]:
        """The entry ranges skipped in executors (after an action). A Spark Connect session
        has no accumulators to bring them back: they are in the executors' logs, and this
        warns once and lists none."""
        if self._runtime is None:
            return []
        try:
            recorded = self._runtime.value
        except NotImplementedError as exc:
            if not getattr(self, "_warned", False):
                self._warned = True
                log.warning("%s", exc)
            return []
        seen = {}
        for path, start, stop, reason in recorded:  # retried tasks report twice
            seen.setdefault((path, start, stop), SkippedInput(path, reason, stop - start, (start, stop)))
        return sorted(seen.values(), key=lambda s: (s.path, s.entry_range))

    @property
    def all_skipped(self) -> list[SkippedInput]:
        return self.skipped + self.runtime_skipped

    @property
    def entries_lost(self) -> int:
        """Events known to be lost (files that could not be opened count as 0 here)."""
        return sum(s.entries_lost or 0 for s in self.all_skipped)

    def summary(self) -> str:
        lines = [f"{len(self.files)} file(s), {self.entries} entries planned in "
                 f"{self.partitions} partition(s), ~{self.bytes_estimate / MiB:.1f} MiB uncompressed"]
        for s in self.all_skipped:
            rng = f" entries [{s.entry_range[0]}, {s.entry_range[1]})" if s.entry_range else ""
            lost = "unknown number of" if s.entries_lost is None else s.entries_lost
            lines.append(f"skipped {s.path}{rng}: {s.reason} ({lost} events lost)")
        return "\n".join(lines)

    def log_skipped(self) -> None:
        """Log one warning per skipped input plus a total (a no-op when nothing was skipped)."""
        items = self.all_skipped
        for s in items:
            log.warning("skipped %s%s: %s (%s events lost)", s.path,
                        f" entries {list(s.entry_range)}" if s.entry_range else "", s.reason,
                        "unknown" if s.entries_lost is None else s.entries_lost)
        if items:
            unknown = sum(s.entries_lost is None for s in items)
            log.warning("on_bad_file='skip': %d input(s) skipped, %d events lost%s", len(items),
                        self.entries_lost, f" (+ {unknown} unopenable file(s))" if unknown else "")


