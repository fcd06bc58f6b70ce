"""Pick a target of one upstream, skip the ejected ones, and learn from every result.

One ``Balancer`` per upstream, built once from the configuration; each request calls
``pick(key)`` and, when the exchange is over, ``done`` (or ``answered``/``failed``) on the
``TargetChoice`` it got. Every worker of the host shares the targets' state (the health
table): an ejection seen by one worker holds for all.

Balancing modes:

- ``round_robin`` and ``weighted``: smooth weighted round robin (nginx's), per process.
  Deterministic and interleaved: every run of sum(weights) requests gives each target
  exactly its weight, so a 95/5 split over 2,000 requests is 1,900/100 in every worker.
- ``least_outstanding``: fewest requests in flight across every worker of the host, relative
  to the weight; ties go round robin.
- ``hash``: rendezvous (highest random weight) hashing of the key: a key keeps its target
  while that target is in service, and when one is ejected only its keys move.

Passive health: a failure of kind CONNECT, RESET, TIMEOUT, BAD_RESPONSE or STATUS (an answer
in ``failure_statuses``) adds one to the target's consecutive failures, a success resets them;
at ``consecutive_failures`` the target is ejected for ``cooldown`` (doubling on every ejection
in a row, up to ``max_cooldown``). After the cooldown exactly one request, across all workers,
claims the half-open probe; its success restores the target, its failure ejects it again.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import threading
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from gw.health import HealthUnavailable, NoHealthyTarget
from gw.health.breaker import Breaker, BreakerPolicy
from gw.health.choice import PassivePolicy, TargetChoice
from gw.health.layout import (
    ACTIVE_DOWN,
    EJECTED_TOTAL,
    EJECTED_UNTIL,
    EJECTIONS,
    FAILS,
    FAILURES,
    LAST_USED,
    OUTSTANDING,
    PROBE_UNTIL,
    RESTORED_AT,
    Slot,
)
from gw.health.state import shared
from gw.health.table import HealthTable

if TYPE_CHECKING:
    from gw.upstream.spec import UpstreamSpec

log = logging.getLogger("gw.health")

NS = 1_000_000_000
MODES = ("round_robin", "weighted", "least_outstanding", "hash")

_MASK = (1 << 64) - 1


class Balancer:
    """Choose targets of one upstream; shared target state, per-process rotation."""

    def __init__(
        self,
        upstream: str,
        targets: Sequence[tuple[str, int]],
        *,
        balance: str = "round_robin",
        passive: PassivePolicy | None = None,
        breaker: BreakerPolicy | None = None,
        table: Callable[[], HealthTable] = shared,
    ) -> None:
        """Build the balancer of one upstream (once; it opens nothing until the first pick).

        Args:
            upstream: the upstream's name.
            targets: ``(url, weight)`` per target, in the order ``target_index`` refers to;
                a weight of 0 drains a target (never picked).
            balance: one of MODES.
            passive: the ejection policy (the defaults when None).
            breaker: the circuit breaker policy, or None for no breaker.
            table: returns this process's health table (``state.shared`` in a worker).
        """
        if balance not in MODES:
            raise ValueError(f"balance must be one of {MODES}, got {balance!r}")
        if not targets or any(w < 0 for _, w in targets) or not any(w for _, w in targets):
            raise ValueError("an upstream needs targets, with weights >= 0, one of them > 0")
        self.upstream = upstream
        self.urls = tuple(url for url, _ in targets)
        self.weights = tuple(w for _, w in targets)
        self.balance = balance
        self.passive = passive or PassivePolicy()
        self.breaker = Breaker(upstream, breaker) if breaker else None
        # PERF: in-flight counts cost a lock round trip (two fcntl calls) at each end of a
        # request; only least_outstanding reads them, so only it keeps them.
        self.counts_in_flight = balance == "least_outstanding"
        # One target, nothing counted at the pick: ``pick``'s shorter path (PERF).
        self._alone = len(targets) == 1 and self.breaker is None and not self.counts_in_flight
        self._table = table
        self._binding: tuple[HealthTable, tuple[Slot, ...]] | None = None
        self._current = [0] * len(targets)
        self._lock = threading.Lock()
        self._turn = itertools.count()
        self._seeds = tuple(_hash64(url) for url in self.urls)

    def pick(self, key: str | None = None, avoid: Collection[int] = ()) -> TargetChoice:
        """Choose a target for one request (and count it in flight, for least_outstanding).

        Args:
            key: the hash key (a client address, header value or user id) in ``hash``
                mode; ignored otherwise, and None falls back to round robin.
            avoid: target indexes to skip if any other target is in service (a retry
                passes the targets that already failed this request).

        Raises:
            NoHealthyTarget: every target is ejected or down (503, at once).
            CircuitOpen: the upstream's circuit breaker is open (503, at once).
        """
        table = self._table()
        binding = self._binding  # PERF: ``slots`` inline for a table already resolved
        slots = binding[1] if binding is not None and binding[0] is table else None
        if slots is None:
            slots = self._slots_or_503(table)
        if self._alone and not avoid:
            # PERF: a lone target in service is the choice: what the scan and the choice
            # below decide for it, without their lists and calls (two reads, lock-free).
            words, base = table.words, slots[0].base
            if not words[base + ACTIVE_DOWN] and not words[base + EJECTED_UNTIL]:
                return TargetChoice(self, table, slots[0], 0, False, False)
        now = table.now()
        usable, probe = self._scan(table.words, slots, now)
        if avoid:
            usable, probe = _without(usable, probe, avoid)
        if not usable and probe < 0:
            raise self._none_healthy(table, slots, now)
        trial = self.breaker.admit(table, now) if self.breaker else False
        try:
            if probe >= 0 and self._claim_probe(table, slots[probe], now):
                return TargetChoice(self, table, slots[probe], probe, True, trial)
            if not usable:
                raise self._none_healthy(table, slots, now)
            index = self._choose(usable, key, table.words, slots)
            if self.counts_in_flight:
                self._count(table, slots[index])
        except BaseException:
            if self.breaker:
                self.breaker.cancel(table, trial)
            raise
        return TargetChoice(self, table, slots[index], index, False, trial)

    def slots(self, table: HealthTable) -> tuple[Slot, ...]:
        """Return the targets' slots in ``table``, resolving them once per table."""
        binding = self._binding
        if binding is not None and binding[0] is table:
            return binding[1]
        slots = tuple(table.target(self.upstream, url) for url in self.urls)
        self._binding = (table, slots)
        return slots

    def _slots_or_503(self, table: HealthTable) -> tuple[Slot, ...]:
        try:
            return self.slots(table)
        except HealthUnavailable as ex:  # entering a new target: the table lock timed out
            raise NoHealthyTarget(
                f"the health state of upstream {self.upstream} is unavailable; try again"
            ) from ex

    def finish(
        self, table: HealthTable, slot: Slot, outcome: bool | None, probe: bool, trial: bool
    ) -> None:
        """Record one finished request (``outcome`` None: neutral); see ``TargetChoice.done``."""
        now = table.now()
        if outcome and not probe and not self.counts_in_flight:
            # PERF: the usual request (a success on a target with no failures) takes no lock,
            # and writes the shared page at most once a second (a store that every worker
            # made on every request would bounce the cache line between cores). A stale base
            # only touches another slot's idle clock.
            words, base = table.words, slot.base
            if now - words[base + LAST_USED] > NS:
                words[base + LAST_USED] = now
            quiet = words[base + FAILS] == 0  # a success that changes no state
        else:
            quiet = False
        event = "" if quiet else self._record(table, slot, now, outcome, probe)
        if event:
            url = slot.name.partition("\0")[2]
            log.warning("upstream %s target %s: %s", self.upstream, url, event)
        if self.breaker is not None and outcome is not None:
            self.breaker.record(table, now, not outcome, trial)
        elif self.breaker is not None:
            self.breaker.cancel(table, trial)

    def _record(
        self, table: HealthTable, slot: Slot, now: int, outcome: bool | None, probe: bool
    ) -> str:
        """Apply a result under the target's lock; name any change of state."""
        try:
            base = table.enter(slot)
        except HealthUnavailable:
            return ""  # one result lost; the request itself is not harmed
        try:
            if self.counts_in_flight:
                table.add_outstanding(slot, base, -1)
            return self._judge(table.words, base, now, outcome, probe)
        finally:
            table.leave(slot)

    def _scan(self, words: memoryview, slots: Sequence[Slot], now: int) -> tuple[list[int], int]:
        """Return the targets in service, and one whose half-open probe is free (or -1)."""
        usable: list[int] = []
        probe = -1
        weights = self.weights
        # PERF: lock-free reads of three words per target; decisions are re-checked under
        # the lock only where they change shared state (the probe claim).
        for i, slot in enumerate(slots):
            base = slot.base
            if not weights[i] or words[base + ACTIVE_DOWN]:
                continue
            until = words[base + EJECTED_UNTIL]
            if until == 0:
                usable.append(i)
            elif until <= now and words[base + PROBE_UNTIL] <= now and probe < 0:
                probe = i
        return usable, probe

    def _choose(
        self, usable: list[int], key: str | None, words: memoryview, slots: Sequence[Slot]
    ) -> int:
        if len(usable) == 1:
            return usable[0]
        if self.balance == "least_outstanding":
            return self._least_outstanding(usable, words, slots)
        if self.balance == "hash" and key is not None:
            return self._rendezvous(usable, key)
        return self._smooth(usable)

    def _smooth(self, usable: list[int]) -> int:
        """Smooth weighted round robin over ``usable`` (per process, thread-safe)."""
        weights, current = self.weights, self._current
        with self._lock:
            total, best = 0, usable[0]
            for i in usable:
                current[i] += weights[i]
                total += weights[i]
                if current[i] > current[best]:
                    best = i
            current[best] -= total
        return best

    def _least_outstanding(
        self, usable: list[int], words: memoryview, slots: Sequence[Slot]
    ) -> int:
        """Return the target with the fewest requests in flight host-wide per unit of weight."""
        start = next(self._turn)
        n = len(usable)
        best, best_load, best_weight = -1, 0, 1
        for j in range(n):
            i = usable[(start + j) % n]
            load = words[slots[i].base + OUTSTANDING] + 1
            # (load / weight) < (best_load / best_weight), without floats
            if best < 0 or load * best_weight < best_load * self.weights[i]:
                best, best_load, best_weight = i, load, self.weights[i]
        return best

    def _rendezvous(self, usable: list[int], key: str) -> int:
        """Return the target with the highest weighted rendezvous score for ``key``.

        APPSEC: the key comes from the client; steering is no threat here, since a client
        can always repeat one key to load one target. Rate limits are the defence.
        """
        h = _hash64(key)
        best, best_score = usable[0], -1.0
        for i in usable:
            unit = (_mix(h ^ self._seeds[i]) + 0.5) / 18446744073709551616.0
            score = -self.weights[i] / math.log(unit)
            if score > best_score:
                best, best_score = i, score
        return best

    def _count(self, table: HealthTable, slot: Slot) -> None:
        """Count one more request in flight to ``slot`` (skipped, not failed, on lock trouble)."""
        try:
            base = table.enter(slot)
        except HealthUnavailable:
            return
        try:
            table.add_outstanding(slot, base, 1)
        finally:
            table.leave(slot)

    def _claim_probe(self, table: HealthTable, slot: Slot, now: int) -> bool:
        """Take the half-open probe of an ejected target, unless another request has it."""
        try:
            base = table.enter(slot)
        except HealthUnavailable:
            return False
        words = table.words
        try:
            until = words[base + EJECTED_UNTIL]
            if until == 0 or until > now or words[base + PROBE_UNTIL] > now:
                return False
            words[base + PROBE_UNTIL] = now + int(self.passive.probe_timeout * NS)
            if self.counts_in_flight:
                table.add_outstanding(slot, base, 1)
            return True
        finally:
            table.leave(slot)

    def _judge(
        self, words: memoryview, base: int, now: int, outcome: bool | None, probe: bool
    ) -> str:
        """Apply one result to a target's passive state (under its lock); name any change."""
        words[base + LAST_USED] = now
        if outcome:
            words[base + FAILS] = 0
            if probe and words[base + EJECTED_UNTIL]:
                words[base + EJECTED_UNTIL] = words[base + PROBE_UNTIL] = 0
                words[base + RESTORED_AT] = now
                return "restored: the half-open probe succeeded"
            return ""
        if outcome is None:
            if probe:
                words[base + PROBE_UNTIL] = 0  # said nothing: let the next request probe
            return ""
        words[base + FAILURES] += 1
        words[base + FAILS] += 1
        limit = self.passive.consecutive_failures
        if probe or (limit and words[base + FAILS] >= limit and not words[base + EJECTED_UNTIL]):
            return self._eject(words, base, now, probe)
        return ""

    def _eject(self, words: memoryview, base: int, now: int, probe: bool) -> str:
        """Eject a target, for a cooldown that doubles with each ejection in a row."""
        policy = self.passive
        longest = int(policy.max_cooldown * NS)
        restored = words[base + RESTORED_AT]
        if restored and now - restored > longest:
            words[base + EJECTIONS] = 0  # it stayed healthy long enough: start over
        ejections = words[base + EJECTIONS]
        cooldown = min(int(policy.cooldown * NS) << min(ejections, 40), longest)
        words[base + EJECTED_UNTIL] = now + cooldown
        words[base + EJECTIONS] = ejections + 1
        words[base + PROBE_UNTIL] = 0
        words[base + EJECTED_TOTAL] += 1
        why = "the half-open probe failed" if probe else f"{words[base + FAILS]} failures in a row"
        return f"ejected for {cooldown / NS:g}s ({why})"

    def _none_healthy(self, table: HealthTable, slots: Sequence[Slot], now: int) -> NoHealthyTarget:
        words = table.words
        waits = [words[s.base + EJECTED_UNTIL] - now for s in slots]
        headers = {}
        if any(w > 0 for w in waits):
            soonest = min(w for w in waits if w > 0)
            headers["Retry-After"] = str(max(1, math.ceil(soonest / NS)))
        return NoHealthyTarget(f"no healthy target for upstream {self.upstream}", headers=headers)


def for_upstream(spec: UpstreamSpec) -> Balancer:
    """Build the balancer of an upstream from its spec (round robin without health settings).

    The target URLs are ``str(target)``, the names the master gave ``state.create``.
    """
    urls = [str(t) for t in spec.targets]
    probe_timeout = spec.connect_timeout + spec.read_timeout
    if spec.health is not None:
        return spec.health.balancer(spec.name, urls, probe_timeout)
    return Balancer(spec.name, [(url, 1) for url in urls])


def _without(usable: list[int], probe: int, avoid: Collection[int]) -> tuple[list[int], int]:
    """Drop the ``avoid`` targets from a scan's result, unless that leaves nothing."""
    kept = [i for i in usable if i not in avoid]
    kept_probe = -1 if probe in avoid else probe
    if kept or kept_probe >= 0:
        return kept, kept_probe
    return usable, probe


def _hash64(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(x: int) -> int:
    """Scramble 64 bits (splitmix64's finalizer): a cheap, well-spread per-target hash."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)
