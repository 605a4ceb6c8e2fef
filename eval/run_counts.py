"""What one pass of the eval job over its journal did, for the log and the job's exit status."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunCounts:
    """Asked/written anew, found already done, failed (and why)."""

    written: int = 0
    cached: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
