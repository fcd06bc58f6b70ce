"""Safe retries of unsafe requests by ``Idempotency-Key`` (draft-ietf-httpapi-idempotency-key).

- ``gw.idempotency.keys``: the key header, the record's name, the request fingerprint and
  which statuses are final (pure).
- ``gw.idempotency.settings``: ``idempotency:`` on a route, ``idempotency_store:`` once.
- ``gw.idempotency.stage.IdempotencyStage``: the pipeline's stage. Records are kept in the
  response cache's stores (``gw.cache``): files shared by a host's workers, or one Redis.
"""
