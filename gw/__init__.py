"""gw: an API gateway for teams that run HTTP services on VMs."""

__version__ = "0.1.0"
