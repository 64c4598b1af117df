"""Row and byte limits on results (docs/limits.md)."""

from .session import DRAINING, OPEN, PAUSED, STOPPED, Budget, Cut, SessionLimits
from .spec import UNLIMITED, LimitSpec, build_limit_spec
from .usage import RollingUsage, UsageWindows

__all__ = [
    "DRAINING",
    "OPEN",
    "PAUSED",
    "STOPPED",
    "UNLIMITED",
    "Budget",
    "Cut",
    "LimitSpec",
    "RollingUsage",
    "SessionLimits",
    "UsageWindows",
    "build_limit_spec",
]
