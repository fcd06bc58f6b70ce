"""TLS to https upstreams: whom to trust, which client certificate to show, which name to check.

One ``tls:`` block per upstream, in nginx's vocabulary (``proxy_ssl_*``)::

    upstreams:
      orders:
        targets: [https://10.0.0.5:8443]
        tls:
          ca_file: /etc/gw/orders-ca.pem        # proxy_ssl_trusted_certificate
          client_cert: /etc/gw/gw-client.pem    # proxy_ssl_certificate
          client_key: /etc/gw/gw-client.key     # proxy_ssl_certificate_key
          server_name: orders.internal          # proxy_ssl_name (also sent as SNI)
          verify: true                          # proxy_ssl_verify (nginx: off; gw: on)

The block is read by ``gw.upstream.settings.UpstreamTlsSettings``; this module (no pydantic)
builds what it describes. Every https upstream with a ``tls:`` block gets ONE
``ssl.SSLContext`` of its own, built with the config (in each process that loads it: the
gunicorn master checks the config, and every worker loads and compiles it again after the
fork, so no context crosses a fork into a process that uses it). The upstream's connection
pools and its active health checks share that context, so a check trusts and shows exactly
what a proxied request does. https upstreams without ``tls:`` share one context per process
that trusts the system's CA store (which honours ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``) and
checks the target's host name.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from urllib3.util.ssl_ import create_urllib3_context

if TYPE_CHECKING:
    from gw.upstream.settings import UpstreamTlsSettings

log = logging.getLogger("gw.config")

_ALPN = ["http/1.1"]  # gw.upstream.wire speaks HTTP/1.1 only
_MAX_PEM_BYTES = 1024 * 1024
_SYSTEM_TRUST: dict[int, TlsClient] = {}  # pid -> the shared system-trust client


@dataclass(frozen=True)
class TlsClient:
    """What an https connection to one upstream uses: the shared context and the name checked.

    Warning:
        ``context`` is shared by every connection of the upstream (pools and health checks,
        all threads of the worker): never change it after ``build_client`` returns.
    """

    context: ssl.SSLContext
    server_name: str | None  # None: the target's host


def build_client(
    settings: UpstreamTlsSettings | None, where: str
) -> tuple[TlsClient | None, list[str]]:
    """Build the upstream's TLS client, loading its files now; return it and any problems.

    ``where`` is the upstream's location (``upstreams.orders``); problems name the exact key
    (``upstreams.orders.tls.ca_file: ...``), so a bad file refuses the config, never a request.
    """
    if settings is None:
        return _system_trust(), []
    problems = _unreadable(settings, f"{where}.tls")
    if problems:
        return None, problems
    context = _context(settings.verify)
    problem = _load_trust(context, settings, f"{where}.tls") or _load_identity(
        context, settings, f"{where}.tls"
    )
    if problem:
        return None, [problem]
    if not settings.verify:
        log.warning(
            "%s.tls.verify is false: TLS to this upstream is encrypted but NOT "
            "authenticated; anyone on the network path can pose as it and read what the "
            "gateway sends",
            where,
        )
    return TlsClient(context, settings.server_name), []


def _system_trust() -> TlsClient:
    """The context of https upstreams without ``tls:``, one per process.

    PERF: loading the system's CA store takes about 35 ms; upstreams without their own
    settings share this one instead of paying it each (per process: a worker forked after a
    reload loads the store as it is then).
    """
    pid = os.getpid()
    client = _SYSTEM_TRUST.get(pid)
    if client is None:
        _SYSTEM_TRUST.clear()
        context = _context(verify=True)
        context.load_default_certs()
        client = _SYSTEM_TRUST[pid] = TlsClient(context, None)
    return client


def _context(verify: bool) -> ssl.SSLContext:
    """urllib3's hardened client context (TLS 1.2+, no compression, no tickets)."""
    # APPSEC: verify is on unless the operator wrote verify: false (warned at load).
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    context.set_alpn_protocols(_ALPN)
    return context


def _unreadable(settings: UpstreamTlsSettings, where: str) -> list[str]:
    """Name each configured file that cannot be read, or does not hold what its key says."""
    expected = {
        "ca_file": "-----BEGIN CERTIFICATE-----",
        "client_cert": "-----BEGIN CERTIFICATE-----",
        "client_key": "PRIVATE KEY-----",  # PKCS#8, EC, RSA, or ENCRYPTED (refused later)
    }
    problems = []
    for key, marker in expected.items():
        path = getattr(settings, key)
        if path is None:
            continue
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                text = handle.read(_MAX_PEM_BYTES)
        except OSError as ex:
            problems.append(f"{where}.{key}: cannot read {path!r} ({ex.strerror})")
            continue
        if marker not in text:
            what = "PEM private key" if key == "client_key" else "PEM certificate"
            problems.append(f"{where}.{key}: {path!r} holds no {what}")
    return problems


def _load_trust(context: ssl.SSLContext, settings: UpstreamTlsSettings, where: str) -> str:
    """Trust ca_file alone, or the system's store; return a problem or ""."""
    if not settings.verify:
        return ""
    if settings.ca_file is None:
        context.load_default_certs()
        return ""
    # APPSEC: with a private CA only that CA vouches for the upstream (as nginx's
    # proxy_ssl_trusted_certificate): a public CA's certificate for the name is refused.
    try:
        context.load_verify_locations(cafile=settings.ca_file)
    except (ssl.SSLError, OSError) as ex:
        return f"{where}.ca_file: cannot load {settings.ca_file!r} ({ex})"
    return ""


def _load_identity(context: ssl.SSLContext, settings: UpstreamTlsSettings, where: str) -> str:
    """Load the client certificate and key; return a problem or ""."""
    if settings.client_cert is None or settings.client_key is None:
        return ""
    try:
        # ops: a password callback that refuses, so that an encrypted key fails the config
        # instead of OpenSSL prompting on a terminal that a service does not have.
        context.load_cert_chain(settings.client_cert, settings.client_key, _no_password)
    except _EncryptedKey:
        return f"{where}.client_key: {settings.client_key!r} is encrypted; gw needs it unencrypted"
    except ssl.SSLError as ex:
        if ex.reason == "KEY_VALUES_MISMATCH":
            return f"{where}.client_key: {settings.client_key!r} is not the key of client_cert"
        return f"{where}.client_cert: cannot load it with client_key ({ex})"
    except OSError as ex:
        return f"{where}.client_cert: cannot load it with client_key ({ex})"
    return ""


class _EncryptedKey(ValueError):
    pass


def _no_password() -> str:
    raise _EncryptedKey
