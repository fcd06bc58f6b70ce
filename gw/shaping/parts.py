"""One part of an aggregate route: its GET on a pool thread, its JSON answer, its report.

``gw.shaping.compose.Aggregator`` makes a ``PartCall`` per part and waits for them; a call never
raises an upstream failure, it returns it in its ``PartResult``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gw.errors import GatewayError, UpstreamBadResponse, UpstreamError, UpstreamTimeout
from gw.shaping import load_json
from gw.upstream.client import UpstreamRequest

if TYPE_CHECKING:
    from gw.shaping.compose import PartSpec
    from gw.upstream.client import UpstreamClient, UpstreamResponse


class PartFailed(UpstreamError):
    """A part's upstream answered with a status other than 2xx (502)."""

    code = "part_failed"


@dataclass(frozen=True, slots=True)
class PartResult:
    value: Any = None
    error: GatewayError | None = None


@dataclass(frozen=True, slots=True)
class PartReport:
    """What one part sent upstream did, for the metrics and the access log.

    ``status`` is None when no response arrived (``error`` then says why, as the gateway error
    code); ``seconds`` runs until the response headers, or until the failure.
    """

    key: str
    upstream: str
    target: str | None
    status: int | None
    seconds: float
    error: str | None

    def log_fields(self) -> dict[str, Any]:
        """Return the part's entry for the access line's ``parts`` list."""
        fields: dict[str, Any] = {"key": self.key, "upstream": self.upstream}
        fields.update(target=self.target, status=self.status)
        fields["duration_ms"] = round(self.seconds * 1000, 3)
        return fields | ({"error": self.error} if self.error else {})


PartObserver = Callable[[PartReport], None]


class PartCall:
    """One part's request, run on a pool thread; the request thread may cancel it."""

    def __init__(
        self,
        part: PartSpec,
        path: str,
        headers: dict[str, str],
        client: UpstreamClient,
        deadline: float,
        max_bytes: int,
        observe: PartObserver | None = None,
    ) -> None:
        self.part = part
        self.path = path
        self.headers = headers
        self.client = client
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.observe = observe
        # PERF: a plain attribute is enough: it only ever goes from False to True.
        self.cancelled = False

    def fetch(self) -> PartResult:
        """Send the part and read its JSON answer; never raise an UpstreamError."""
        remaining = self.deadline - time.monotonic()
        if self.cancelled or remaining <= 0:
            return PartResult(error=self.timed_out())  # never sent: no upstream saw it
        started = time.monotonic()
        try:
            request = UpstreamRequest("GET", self.path, self.headers, read_timeout=remaining)
            response = self.client.send(request)
        except UpstreamError as ex:
            self._report(None, time.monotonic() - started, ex)
            return PartResult(error=ex)
        seconds = time.monotonic() - started
        try:
            result = PartResult(value=self._read(response))
        except UpstreamError as ex:
            result = PartResult(error=ex)
        finally:
            if not response.finished:
                response.abandon()  # cancelled, failed or too large: never reuse half-read
        self._report(response, seconds, result.error)
        return result

    def _report(
        self, response: UpstreamResponse | None, seconds: float, error: GatewayError | None
    ) -> None:
        if self.observe is None:
            return
        target = str(response.target) if response is not None else None
        status = response.status if response is not None else None
        code = error.code if error is not None else None
        self.observe(PartReport(self.part.key, self.part.upstream, target, status, seconds, code))

    def _read(self, response: UpstreamResponse) -> Any:
        name = self.part.upstream
        if not 200 <= response.status < 300:
            raise PartFailed(
                f"upstream {name} answered with status {response.status}",
                extra={"upstream_status": response.status},
            )
        declared = response.content_length
        if declared is not None and declared > self.max_bytes:
            raise self._too_large()
        data = self._collect(response)
        try:
            return load_json(data)
        except ValueError:
            raise UpstreamBadResponse(
                f"upstream {name} answered with a body that is not JSON"
            ) from None

    def _collect(self, response: UpstreamResponse) -> bytes:
        data = bytearray()
        # Leaving this loop early leaves the response unfinished: fetch() then abandons it.
        for chunk in response.body():
            data += chunk
            if len(data) > self.max_bytes:
                raise self._too_large()
            if self.cancelled or time.monotonic() > self.deadline:
                raise self.timed_out()
        return bytes(data)

    def _too_large(self) -> UpstreamBadResponse:
        return UpstreamBadResponse(
            f"upstream {self.part.upstream} answered with more than {self.max_bytes} bytes"
        )

    def timed_out(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"upstream {self.part.upstream} did not answer in time")

    def cancel(self) -> None:
        self.cancelled = True
