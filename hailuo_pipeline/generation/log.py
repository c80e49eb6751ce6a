"""Where generation reports progress: a Dagster step's log, or anything with info and warning."""

from __future__ import annotations

from typing import Any, Protocol


class RunLog(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...
