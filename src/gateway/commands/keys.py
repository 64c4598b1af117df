"""`gateway keys` (placeholder: owned by the module's author)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    pass
