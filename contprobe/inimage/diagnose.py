"""How a probe says *why* it failed: a gotcha id from the catalog plus evidence."""
from __future__ import annotations

from typing import NoReturn


class ProbeFailure(AssertionError):
    """A diagnosed probe failure. The plugin records gotcha, message and evidence."""

    def __init__(self, gotcha: str, message: str, evidence: str = "") -> None:
        super().__init__(message)
        self.gotcha = gotcha
        self.message = message
        self.evidence = evidence

    def __str__(self) -> str:
        text = f"[{self.gotcha}] {self.message}"
        return text + ("\n" + self.evidence if self.evidence else "")


def fail(gotcha: str, message: str, evidence: str = "") -> NoReturn:
    """Fail the running probe with a diagnosis."""
    __tracebackhide__ = True
    raise ProbeFailure(gotcha, message, evidence)


def skip(gotcha: str, reason: str) -> NoReturn:
    """Skip the running probe, naming the gotcha that explains why (e.g. no GPU here)."""
    import pytest
    __tracebackhide__ = True
    pytest.skip(f"[{gotcha}] {reason}")
