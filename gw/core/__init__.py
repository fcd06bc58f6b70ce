"""The pure code of a request's path: paths, routing, rewrites, headers, forwarding, tracing,
retry and GCRA arithmetic. Imports only the standard library and ``gw.errors``."""

# The modules ``GW_MYPYC=1 pip install --no-build-isolation .`` compiles with mypyc (setup.py;
# PERF, see bench/README.md). Left out: routes, routing and nearest (their Generic classes do
# not import compiled on CPython 3.11) and rewrite (a frozen dataclass that fills fields with
# object.__setattr__). An error class with its own ``code`` lives in gw.errors, never here:
# compiled, a subclass of an interpreted class loses its class attributes.
COMPILED = (
    "body",
    "conditions",
    "exchange",
    "forwarding",
    "gcra",
    "headers",
    "hosts",
    "identity",
    "ids",
    "ingress",
    "methods",
    "outgoing",
    "paths",
    "patterns",
    "request",
    "retry",
    "tracing",
)
