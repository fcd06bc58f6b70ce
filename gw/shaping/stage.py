"""The shaping stage: a response's transformations for its path, then its compression."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gw.core.request import Request
from gw.shaping.compress import Compressor
from gw.shaping.transform import Transformer

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Shaper:
    transformer: Transformer | None
    compressor: Compressor | None
    # Whether there is anything to do: without it, ``request_headers`` returns the headers it
    # is given and ``response`` a copy of the headers with the body as it is (PERF: callers
    # may skip the calls).
    shapes: bool = field(init=False)

    def __post_init__(self) -> None:
        shapes = self.transformer is not None or self.compressor is not None
        object.__setattr__(self, "shapes", shapes)

    def request_headers(self, request: Request, headers: dict[str, str]) -> dict[str, str]:
        """The upstream-bound headers after the path's header rules."""
        rules = self.transformer.for_path(request.path) if self.transformer else None
        return rules.request_headers(headers) if rules is not None else headers

    def response(
        self, request: Request, status: int, headers: Headers, body: Iterable[bytes]
    ) -> tuple[Headers, Iterable[bytes]]:
        """Apply the path's transformations (JSON within the size limit), then compression."""
        rules = self.transformer.for_path(request.path) if self.transformer else None
        if rules is not None:
            if rules.wants_body(status, headers):
                headers, data = rules.apply(status, headers, b"".join(body))
                body = [data]
            else:
                headers = rules.response_headers(headers)
        if self.compressor is not None:
            accept = request.headers.get("Accept-Encoding")
            headers, body = self.compressor.apply(request.method, status, accept, headers, body)
        return list(headers), body
