"""The pure code of a request's path: paths, routing, rewrites, headers, forwarding, tracing,
retry and GCRA arithmetic. Imports only the standard library and ``gw.errors``."""
