"""The compiled form of gw.edge.reply's answer head (gw/edge/_replyfields.c)."""

def configure(hop: str, length: str, date: str) -> None: ...
def head(
    status: str,
    headers: list[tuple[str, str]],
    plain_names: dict[str, str],
    seen_kinds: dict[str, str],
    date: str,
    chunkable: bool,
    keep_alive: bool,
    bodyless: bool,
) -> tuple[bytes, int | None, bool, bool, bool] | None: ...
def answer(
    status: str,
    headers: list[tuple[str, str]],
    plain_names: dict[str, str],
    seen_kinds: dict[str, str],
    date: str,
    chunkable: bool,
    keep_alive: bool,
    bodyless: bool,
    chunks: object,
) -> tuple[bytes, bool, int, int | None, bool, bool] | None: ...
