"""What the workers of one host share, for every feature and knowing none of them.

- ``gw.host.rundir``: where the runtime directory is (the one reader of ``GW_RUNTIME_DIR``),
  claiming it, and the private fallback directory of a process without one.
- ``gw.host.runtime``: how the gunicorn master creates, claims and fills it (``gw.master``
  names what each feature puts there).
- ``gw.host.locks``: striped locks across the threads and processes of the host, with their
  own errors (``LockTimeout``, ``StripeFrozen``).
- ``gw.host.files``: shared files written whole and renamed into place, then mapped.
- ``gw.host.redis``: the redis-py adapter (``RedisUnavailable``).

Features translate these errors into their own; nothing here imports a feature.
"""
