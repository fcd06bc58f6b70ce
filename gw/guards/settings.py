"""The types of a route's guard settings (``allow_from``, ``deny_from``)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator, Field


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"not a CIDR network or IP address: {value!r} (e.g. 10.0.0.0/8, 2001:db8::/32)"
        ) from None
    return value


Network = Annotated[str, AfterValidator(_network)]
# An empty list would refuse (allow_from) or permit (deny_from) everyone: omit the key instead.
NetworkList = Annotated[list[Network], Field(min_length=1)]
