"""The type of llhttp's compiled ``on_header`` callback (gw/_collector.h), which each compiled
module that parses HTTP/1 exports as ``Collector``; ``Field`` is the kind of field it keeps."""

from collections.abc import Callable
from typing import Generic, TypeVar

Field = TypeVar("Field")

class Collector(Generic[Field]):
    fields: list[Field] | None
    def __init__(
        self,
        slow: Callable[[bytes, bytes], None],
        size: int,
        count: int,
        names: dict[bytes, str] | None = None,
    ) -> None: ...
    def __call__(self, name: bytes, value: bytes) -> None: ...
