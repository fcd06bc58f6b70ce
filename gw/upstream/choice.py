"""The seam between the upstream client and whatever picks its targets.

The client asks a ``Picker`` for a target before each try and reports how the try ended on
the ``Choice`` it got. The health package's ``Balancer`` is the picker gw uses (balancing,
ejection, circuit breaking) and its ``for_upstream`` builds one from an upstream's spec. The
arrow points one way: the health package imports this package, never the reverse.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

# An outcome that says nothing about the target (the client left, the gateway gave up, the
# gateway's own connection cap was reached): ``Choice.done(False, CANCELLED)`` is neutral.
CANCELLED = "cancelled"


class Choice(Protocol):
    """The target one try goes to; report the outcome exactly once (later reports do nothing)."""

    target_index: int  # into the upstream's targets, in the spec's order

    def done(self, ok: bool, kind: str = ...) -> None:
        """Report the outcome: a success, a failure of ``kind``, or CANCELLED (neutral)."""

    def answered(self, status: int) -> None:
        """Report an answer with ``status`` (the picker decides which statuses fail)."""

    def failed(self, ex: BaseException) -> None:
        """Report a try that ended with ``ex`` (a gateway upstream error, usually)."""


class Picker(Protocol):
    """Choose the target of each try of one upstream."""

    def pick(self, key: str | None = None, avoid: Collection[int] = ()) -> Choice:
        """Choose a target (``key``: for hashing; ``avoid``: targets this request tried).

        Raises:
            UpstreamError: no target may be tried now (a 503, at once).
        """
