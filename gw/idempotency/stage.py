"""The idempotency stage: answer a retried request with the first answer to its key.

Adapter between the pipeline and the response cache's stores (``gw.cache.store`` files shared
by a host's workers, or ``gw.cache.redis_store``); the key, fingerprint and status rules are
pure (``gw.idempotency.keys``). The store is opened lazily in each worker, after the fork.

One request with a key, on a route and method that opted in:

1. its body is read whole (``max_request_bytes``, else 413) and fingerprinted with the method
   and target;
2. a stored record of the key answers it (``Idempotent-Replayed: true``), or 422 when the
   record was made by another request;
3. otherwise it takes the key's fill lock (the cache's stampede lock): a concurrent duplicate
   waits for it up to ``lock_timeout`` and is then answered from the record (or 409);
4. the leader forwards; a final answer (``keys.storable``) read whole within
   ``max_body_bytes`` is stored for ``ttl``, anything else is passed on and not stored.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterable

from gw.cache import Cache, CachedResponse, CacheKey
from gw.core.body import request_body
from gw.core.exchange import Outcome
from gw.core.headers import HOP_BY_HOP, response_headers
from gw.core.request import Request
from gw.errors import IdempotencyInFlight, IdempotencyKeyMissing, IdempotencyKeyReused
from gw.host import rundir
from gw.idempotency import keys
from gw.idempotency.settings import IdempotencyStoreSettings, RouteIdempotencySettings
from gw.observe.instruments import Metrics
from gw.upstream.client import UpstreamResponse

log = logging.getLogger("gw")

HEADER = "Idempotency-Key"
REPLAYED = ("Idempotent-Replayed", "true")
STORE_DIR = "idempotency"

Answer = Callable[[int, list[tuple[str, str]], bytes], Outcome]
# Pass an upstream answer on, streamed: its body from the start (None), or these chunks.
Relay = Callable[[UpstreamResponse, Iterable[bytes] | None], Outcome]


class IdempotencyStage:
    """Replay, wait for, or record the answers of keyed requests."""

    def __init__(
        self,
        settings: IdempotencyStoreSettings,
        min_upload_rate: float | None = None,
        upload_grace: float = 10.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self._rate = (min_upload_rate, upload_grace)
        self._metrics = metrics
        self._store: Cache | None = None
        self._pid = -1

    def serve(
        self,
        request: Request,
        route: str,
        rules: RouteIdempotencySettings,
        forward: Callable[[], UpstreamResponse],
        relay: Relay,
        answer: Answer,
    ) -> Outcome:
        """Answer ``request`` from its key's record, or ``forward`` it and record the answer
        (``answer`` with the bytes in hand), or ``relay`` an answer that is not recorded."""
        raw = request.headers.get(HEADER)
        if raw is None:
            if rules.required:
                raise IdempotencyKeyMissing(f"{request.method} here requires an {HEADER} header")
            return relay(forward(), None)
        name = keys.record_key(route, self.scope(request), keys.parse_key(raw))
        sent = keys.fingerprint(
            request.method, request.path, request.query, self._body(request, rules)
        )
        store = self._open()
        found = store.lookup(name)
        if found is not None:
            return self._replay(route, found, sent, answer)
        lease = store.lead(name)
        try:
            if lease.waited:
                self._count(route, "waited")
                found = store.lookup(name)
                if found is not None:
                    return self._replay(route, found, sent, answer)
                if not lease.leader:
                    self._count(route, "in_flight")
                    raise IdempotencyInFlight(
                        f"a request with this {HEADER} is still in flight; retry later",
                        headers={"Retry-After": "1"},
                    )
            if not lease.leader:
                self._count(route, "unavailable")  # the store failed: pass through, unguarded
                return relay(forward(), None)
            return self._record(store, name, route, rules, sent, forward(), relay, answer)
        finally:
            lease.release()

    @staticmethod
    def scope(request: Request) -> str:
        """Return who sent the key: the verified caller, else the client's address.

        APPSEC: on an authenticated request the scope is ``Identity.principal`` (issuer and
        subject, or the API key's consumer), so a key is private to its caller. Anonymous
        requests are scoped by the client address as resolved through trusted proxies only
        (``ClientInfo.ip``, never a client-supplied header): clients behind one NAT share a
        scope there, and only the key's secrecy (a random UUID) keeps their records apart.
        """
        identity = request.identity
        if identity is not None:
            return identity.principal
        return json.dumps(["ip", request.client.ip], separators=(",", ":"))

    def _body(self, request: Request, rules: RouteIdempotencySettings) -> bytes:
        """Read the body whole (413 over ``max_request_bytes``); the upstream then reads the
        same bytes from memory."""
        limit = rules.max_request_bytes
        body, _ = request_body(request, limit, *self._rate)
        data = b"" if body is None else body.buffer(limit)
        assert data is not None  # LimitedBody raised BodyTooLarge past the limit
        request.body = io.BytesIO(data)
        return data

    def _replay(self, route: str, found: CachedResponse, sent: bytes, answer: Answer) -> Outcome:
        """Answer with a stored record, if it was made by this same request (else 422)."""
        stored_print, body = keys.unseal(found.body)
        if stored_print != sent:
            self._count(route, "conflict")
            raise IdempotencyKeyReused(
                f"this {HEADER} was used with another request (method, path or body)"
            )
        self._count(route, "replayed")
        return answer(found.status, [*found.headers, REPLAYED], body)

    def _record(
        self,
        store: Cache,
        name: CacheKey,
        route: str,
        rules: RouteIdempotencySettings,
        sent: bytes,
        upstream: UpstreamResponse,
        relay: Relay,
        answer: Answer,
    ) -> Outcome:
        """Store a final answer read whole, then send it; relay any other answer unstored.

        A body without Content-Length (chunked) is read up to ``max_body_bytes``: past that,
        what was read and the rest stream on, unstored. An upstream failure mid-body raises
        (UpstreamError): nothing is stored.
        """
        length = upstream.content_length
        if not keys.storable(upstream.status) or (length or 0) > rules.max_body_bytes:
            self._count(route, "unstored")
            return relay(upstream, None)
        chunks = upstream.body()
        parts: list[bytes] = []
        have = 0
        for chunk in chunks:
            parts.append(chunk)
            have += len(chunk)
            if have > rules.max_body_bytes:
                self._count(route, "unstored")
                return relay(upstream, itertools.chain(parts, chunks))
        body = b"".join(parts)
        headers = response_headers(upstream.headers)
        kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
        stored = store.store(name, upstream.status, kept, keys.seal(sent, body), rules.ttl)
        self._count(route, "stored" if stored else "unstored")
        return answer(upstream.status, headers, body)

    def _count(self, route: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.idempotency(route, outcome)

    def _open(self) -> Cache:
        if self._store is None or self._pid != os.getpid():
            self._store = open_store(self.settings)
            self._pid = os.getpid()
        return self._store


def open_store(settings: IdempotencyStoreSettings, directory: str | None = None) -> Cache:
    """Open the records' store: the cache's file store under ``GW_RUNTIME_DIR/idempotency``
    (one host), or its Redis store under ``key_prefix`` (every host)."""
    if settings.backend != "shared":
        from gw.cache.redis_store import RedisCache

        return RedisCache(settings)
    from gw.cache.store import ResponseCache

    return ResponseCache(settings, directory or store_dir())


def store_dir() -> str:
    """Return ``GW_RUNTIME_DIR/idempotency``; without GW_RUNTIME_DIR, a private directory.

    Warning:
        A private directory is shared by nobody: a retry that reaches another worker is
        forwarded again. Run gw through its gunicorn.conf.py.
    """
    runtime = rundir.runtime_dir()
    if runtime:
        return os.path.join(runtime, STORE_DIR)
    log.warning("no GW_RUNTIME_DIR: idempotency records are private to this process")
    return os.path.join(rundir.private_dir("gw-private-"), STORE_DIR)
