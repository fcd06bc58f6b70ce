"""The ``auth:`` block and the per-route ``auth:`` policy, as frozen pydantic models.

The seed 003 block loads unchanged::

    {"type": "jwt", "jwks_uri": "https://auth.example.com/.well-known/jwks.json",
     "issuer": "https://auth.example.com", "audiences": ["api.example.com"],
     "exclude_paths": ["/api/health", "/api/auth/login", "/api/auth/register"]}

The top-level ``issuer``/``jwks_uri``/``secret``/``audiences``/``algorithms`` are shorthand for
a one-element ``issuers`` list; several identity providers are listed under ``issuers``, each
with an optional short ``name`` that route policies use (default: its ``issuer`` value)::

    auth:
      issuers:
        - {name: main, issuer: https://login.example.com, jwks_uri: ..., audiences: [api]}
        - {name: partner, issuer: https://idp.partner.net, secret: ${PARTNER_SECRET}, ...}
    routes:
      - {path: /admin/**, upstream: admin, auth: {issuers: [main], roles: {main: [admin]}}}

An issuer may also be written with ``discovery: true`` instead of ``jwks_uri`` (its key set is
found in ``{issuer}/.well-known/openid-configuration``, ``gw.auth.discovery``), and one issuer
may carry an ``introspection:`` block for opaque tokens (``gw.auth.introspection``), alone or
next to its JWT keys.

A caller is the pair (issuer, subject): partner ``alice`` and main ``alice`` are two callers
(``Identity.principal``), and the upstream receives the issuer in ``issuer_header``
(``X-User-Issuer``) next to the subject in ``X-User-Id``.

``exclude_paths`` are matched against the *canonical* path (``gw.core.paths.canonicalize``): an
exact path (``/api/health``, which does not match ``/api/health/``), or a prefix ending in
``/**`` (``/api/public/**`` matches ``/api/public``, ``/api/public/`` and everything under it).
Because matching happens after canonicalization, ``/api/health/../orders`` is ``/api/orders``
and never counts as excluded.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from gw.auth.identity import check_header_value
from gw.core.headers import canonical_name
from gw.core.paths import canonicalize_config
from gw.errors import InvalidPath

_STRICT = ConfigDict(extra="forbid", frozen=True)
Text = Annotated[str, Field(min_length=1, max_length=512)]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_JWKS_ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_SECRET_ALGORITHMS = ("HS256",)
DEFAULT_CLAIM_HEADERS = {"sub": "X-User-Id", "role": "X-User-Role"}
DEFAULT_ISSUER_HEADER = "X-User-Issuer"
MIN_SECRET_BYTES = 32
_HMAC_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_NAME = r"^[A-Za-z0-9_.:-]{1,64}$"
# The source name that stands for API-key callers in a route's ``issuers`` and ``roles``.
API_KEY_SOURCE = "api_key"
# APPSEC: headers whose meaning the gateway or HTTP itself owns; a claim may never set them.
_RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "content-type", "transfer-encoding", "connection",
        "keep-alive", "te", "trailer", "upgrade", "expect", "authorization", "cookie",
        "proxy-authorization", "x-request-id", "x-forwarded-for", "x-forwarded-proto",
        "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "forwarded",
    }
)  # fmt: skip


def _optional_jwks_uri(value: str | None) -> str | None:
    return None if value is None else check_jwks_uri(value)


def _long_secret(value: SecretStr | None) -> SecretStr | None:
    # APPSEC: an HS256 secret is as strong as its length; short ones fall to offline guessing
    # from a single captured token.
    if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"must be at least {MIN_SECRET_BYTES} bytes; generate one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    return value


class IntrospectionCacheSettings(BaseModel):
    """``introspection.cache``: answers remembered per worker, keyed by the token's digest."""

    model_config = _STRICT

    max_entries: int = Field(default=10_000, ge=0, le=1_000_000, description="0: no cache.")
    max_ttl: float = Field(
        default=300,
        gt=0,
        le=86400,
        description="Longest an active answer is reused (and never past the token's exp).",
    )
    negative_ttl: float = Field(
        default=5, ge=0, le=3600, description="How long an inactive answer is reused (0: never)."
    )


class IntrospectionSettings(BaseModel):
    """``introspection:`` on an issuer: where and how to ask about opaque tokens (RFC 7662)."""

    model_config = _STRICT

    endpoint: str = Field(description="https:// URL (http:// only on loopback), POSTed to.")
    client_id: str = Field(min_length=1, max_length=256)
    client_secret_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Environment variable holding the client secret (read at start).",
    )
    client_secret_file: str | None = Field(
        default=None, description="File holding the client secret (read at start)."
    )
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    timeout: float = Field(default=2, gt=0, le=30, description="The whole call, seconds.")
    subject_claim: str = Field(
        default="sub",
        min_length=1,
        max_length=128,
        description="The answer's member that names the caller (sub; client_id for "
        "client-credentials tokens without a sub).",
    )
    cache: IntrospectionCacheSettings = IntrospectionCacheSettings()

    _endpoint = field_validator("endpoint")(lambda cls, v: check_jwks_uri(v))

    @model_validator(mode="after")
    def _one_secret(self) -> IntrospectionSettings:
        # APPSEC: the client secret is never written in the config file itself, which is
        # read by `gw check`, copied into tickets and kept in version control.
        if (self.client_secret_env is None) == (self.client_secret_file is None):
            raise ValueError("give exactly one of client_secret_env or client_secret_file")
        return self


class IssuerSettings(BaseModel):
    """One identity provider: tokens whose ``iss`` is ``issuer`` are checked with its keys."""

    model_config = _STRICT

    name: str | None = Field(
        default=None,
        pattern=_NAME,
        description="Short name for route policies (auth.issuers, auth.roles); default: issuer.",
    )
    issuer: str = Field(min_length=1, max_length=512, description="Exact `iss` value.")
    jwks_uri: str | None = Field(
        default=None, description="https:// URL of the key set (http:// only on loopback)."
    )
    secret: SecretStr | None = Field(
        default=None, description="HS256 shared secret (write `${JWT_SECRET}`), 32+ bytes."
    )
    audiences: list[Text] | None = Field(
        default=None,
        description="Accepted `aud` values; a token must name one of them (required for JWT "
        "issuers; optional with introspection, where an answer then must name one).",
    )
    algorithms: list[str] | None = Field(
        default=None,
        description="Allowed `alg` values (default RS256, ES256, EdDSA for a JWKS; HS256 "
        "for a secret). `none` is never allowed.",
    )

    discovery: bool = Field(
        default=False,
        description="Find jwks_uri in {issuer}/.well-known/openid-configuration (OpenID "
        "Connect Discovery) instead of writing it.",
    )
    introspection: IntrospectionSettings | None = Field(
        default=None, description="Check opaque tokens with the provider (RFC 7662)."
    )

    _jwks_uri = field_validator("jwks_uri")(_optional_jwks_uri)
    _secret = field_validator("secret")(_long_secret)
    _issuer = field_validator("issuer")(lambda cls, v: _forwardable_issuer(v))

    @model_validator(mode="after")
    def _keys_and_algorithms(self) -> IssuerSettings:
        sources = [self.jwks_uri is not None, self.secret is not None, self.discovery]
        if sum(sources) > 1 or (not any(sources) and self.introspection is None):
            raise ValueError(
                f"issuer {self.issuer!r}: give exactly one of jwks_uri, secret or discovery: "
                "true (or an introspection block alone, for opaque tokens only)"
            )
        if self.discovery:
            check_jwks_uri(self.discovery_uri())
        if any(sources) and not self.audiences:
            raise ValueError(f"issuer {self.issuer!r}: audiences must list at least one `aud`")
        if self.audiences is not None and not self.audiences:
            raise ValueError(f"issuer {self.issuer!r}: audiences must not be empty")
        if not any(sources) and self.algorithms is not None:
            raise ValueError(f"issuer {self.issuer!r}: algorithms apply to JWTs only")
        _check_algorithms(self.algorithms, hmac=self.secret is not None)
        _check_secret_strength(self.secret, self.algorithms)
        return self

    @property
    def verifies_jwts(self) -> bool:
        """Tell whether this issuer's JWTs are verified here (keys, secret or discovery)."""
        return self.jwks_uri is not None or self.secret is not None or self.discovery

    def discovery_uri(self) -> str:
        """Return where OpenID Connect Discovery (section 4) says the issuer's metadata is."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @property
    def ref(self) -> str:
        """Return the name route policies use for this issuer: ``name``, else ``issuer``."""
        return self.name or self.issuer

    def allowed_algorithms(self) -> frozenset[str]:
        """Return the configured algorithms, or the default for this kind of key."""
        if self.algorithms:
            return frozenset(self.algorithms)
        default = DEFAULT_SECRET_ALGORITHMS if self.secret else DEFAULT_JWKS_ALGORITHMS
        return frozenset(default)


class ApiKeyEntry(BaseModel):
    """One API key, stored only as the SHA-256 hex digest of the key (``hash_api_key``)."""

    model_config = _STRICT

    id: str = Field(description="Names the key in logs and rate-limit keys: [A-Za-z0-9_.:@-].")
    sha256: str = Field(description="Lowercase hex SHA-256 of the key; never the key itself.")
    consumer: str = Field(
        min_length=1, max_length=256, description="Becomes the subject (X-User-Id)."
    )
    role: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.fullmatch(value):
            raise ValueError("must be 1 to 128 of the characters A-Z a-z 0-9 _ . : @ -")
        return value

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HEX64.fullmatch(value):
            raise ValueError(
                "must be the 64-character hex SHA-256 of the key (see gw.auth.apikeys)"
            )
        return value


class ApiKeySettings(BaseModel):
    """``api_keys:``: the header clients send keys in, and the known keys (inline or a file)."""

    model_config = _STRICT

    header: str = Field(default="X-API-Key", description="The request header carrying the key.")
    keys: list[ApiKeyEntry] = []
    file: str | None = Field(
        default=None, description="YAML/JSON file holding a list shaped like `keys`."
    )

    @field_validator("header")
    @classmethod
    def _header(cls, value: str) -> str:
        if not _TOKEN.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid header name")
        if canonical_name(value) in _RESERVED_HEADERS:
            raise ValueError(f"{value!r} is a header the gateway or HTTP owns")
        return value

    @model_validator(mode="after")
    def _some_keys(self) -> ApiKeySettings:
        if not self.keys and not self.file:
            raise ValueError("give keys, a file, or both")
        return self


class FailureLimitSettings(BaseModel):
    """``auth.failure_limit``: failed authentications one client address may make.

    Written like a rate limit (``limit`` per ``period`` seconds, ``burst`` at once, default
    ``limit``) and counted in the rate limiter's backend (the host's shared table, or
    ``rate_limiting.backend``'s Redis). Past it, the address gets 429 on every route that
    checks credentials until its budget refills (one failure per ``period / limit`` s).
    ``failure_limit: null`` turns the throttle off.
    """

    model_config = _STRICT

    limit: int = Field(default=20, gt=0, le=1_000_000, description="Failed authentications...")
    period: float = Field(default=60, gt=0, le=86400, description="...per this many seconds.")
    burst: int | None = Field(default=None, gt=0, le=1_000_000)


class AuthSettings(BaseModel):
    """The gateway's ``auth:`` block."""

    model_config = _STRICT

    type: Literal["jwt", "api_key", "jwt_or_api_key"] = "jwt"
    issuer: str | None = Field(
        default=None, min_length=1, max_length=512, description="Shorthand: one issuer."
    )
    jwks_uri: str | None = None
    secret: SecretStr | None = None
    audiences: list[Text] | None = None
    algorithms: list[str] | None = None
    issuers: list[IssuerSettings] = Field(default=[], description="Several identity providers.")
    exclude_paths: list[str] = Field(
        default=[], description="Canonical paths, or prefixes ending in /**, never checked."
    )
    leeway: int = Field(default=30, ge=0, le=300, description="Clock skew allowed, seconds.")
    claim_headers: dict[str, str] = Field(
        default=DEFAULT_CLAIM_HEADERS, description="Claim name -> header sent upstream."
    )
    issuer_header: str = Field(
        default=DEFAULT_ISSUER_HEADER,
        description="Header that tells the upstream which issuer vouched for a token's subject "
        "(not sent for API-key callers). Owned by the gateway like X-User-Id.",
    )
    jwks_cache_seconds: float = Field(default=300, ge=1, le=86400)
    jwks_refetch_cooldown: float = Field(
        default=30, ge=1, le=3600, description="Least time between two fetches of a JWKS."
    )
    jwks_timeout: float = Field(default=2, gt=0, le=30)
    max_token_bytes: int = Field(default=8192, ge=256, le=65536)
    api_keys: ApiKeySettings | None = None
    failure_limit: FailureLimitSettings | None = Field(
        default=FailureLimitSettings(),
        description="Failed authentications per client address before 429 (null: no limit).",
    )

    _resolved: tuple[IssuerSettings, ...] = PrivateAttr(default=())

    _jwks_uri = field_validator("jwks_uri")(_optional_jwks_uri)
    _secret = field_validator("secret")(_long_secret)

    @field_validator("exclude_paths")
    @classmethod
    def _exclusions(cls, value: list[str]) -> list[str]:
        return [check_exclude_path(path) for path in value]

    @field_validator("claim_headers")
    @classmethod
    def _claim_headers(cls, value: dict[str, str]) -> dict[str, str]:
        _check_claim_headers(value)
        return value

    @field_validator("issuer_header")
    @classmethod
    def _issuer_header(cls, value: str) -> str:
        _check_header_name(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AuthSettings:
        self._resolved = self._shorthand() or tuple(self.issuers)
        wants_jwt = self.type in ("jwt", "jwt_or_api_key")
        wants_keys = self.type in ("api_key", "jwt_or_api_key")
        if wants_jwt and not self._resolved:
            raise ValueError(f"type {self.type} needs issuer with jwks_uri or secret, or issuers")
        if not wants_jwt and self._resolved:
            raise ValueError("issuer/issuers need type jwt or jwt_or_api_key")
        if wants_keys and self.api_keys is None:
            raise ValueError(f"type {self.type} needs an api_keys block")
        if not wants_keys and self.api_keys is not None:
            raise ValueError("api_keys needs type api_key or jwt_or_api_key")
        names = [i.issuer for i in self._resolved]
        if len(set(names)) != len(names):
            raise ValueError("each issuer may be listed only once")
        if sum(i.introspection is not None for i in self._resolved) > 1:
            # An opaque token does not say who issued it: one provider is asked about them.
            raise ValueError("at most one issuer may have an introspection block")
        self._check_refs()
        self._check_issuer_header()
        return self

    def _check_refs(self) -> None:
        refs = [i.ref for i in self._resolved]
        twice = sorted({ref for ref in refs if refs.count(ref) > 1})
        if twice:
            raise ValueError(f"issuer name {twice[0]!r} is used twice")
        if API_KEY_SOURCE in refs:
            raise ValueError(f"{API_KEY_SOURCE!r} names API-key callers; pick another issuer name")

    def _check_issuer_header(self) -> None:
        folded = canonical_name(self.issuer_header)
        for claim, header in self.claim_headers.items():
            if canonical_name(header) == folded:
                raise ValueError(
                    f"issuer_header {self.issuer_header!r} is already the header of claim {claim!r}"
                )

    def sources(self) -> tuple[str, ...]:
        """Return the names a route policy may accept: each issuer's ``ref``, and ``api_key``."""
        refs = tuple(i.ref for i in self._resolved)
        return refs + ((API_KEY_SOURCE,) if self.api_keys is not None else ())

    def policy_problems(self, policy: RoutePolicy) -> list[str]:
        """Return what is wrong with a route policy here: issuers it names that do not exist."""
        known = self.sources()
        named = [(f"issuers[{i}]", ref) for i, ref in enumerate(policy.issuers or ())]
        if isinstance(policy.roles, dict):
            named += [(f"roles.{ref}", ref) for ref in policy.roles]
        return [
            f"{where}: no issuer named {ref!r} (known: {', '.join(known)})"
            for where, ref in named
            if ref not in known
        ]

    def _shorthand(self) -> tuple[IssuerSettings, ...]:
        """Turn the top-level issuer fields (seed 003 shape) into a one-issuer list."""
        given = [k for k in _SHORTHAND if getattr(self, k) is not None]
        if not given:
            return ()
        if self.issuers:
            raise ValueError(f"use either {given} or issuers, not both")
        if self.issuer is None:
            raise ValueError("issuer is required with jwks_uri or secret (the expected `iss`)")
        _forwardable_issuer(self.issuer)
        if not self.audiences:
            raise ValueError("audiences must list at least one accepted `aud` value")
        if (self.jwks_uri is None) == (self.secret is None):
            raise ValueError("give exactly one of jwks_uri or secret")
        _check_algorithms(self.algorithms, hmac=self.secret is not None)
        _check_secret_strength(self.secret, self.algorithms)
        fields = {k: getattr(self, k) for k in _SHORTHAND}
        return (IssuerSettings.model_construct(**fields),)

    def all_issuers(self) -> tuple[IssuerSettings, ...]:
        """Return every configured issuer (the shorthand fields as a one-element tuple)."""
        return self._resolved


_SHORTHAND = ("issuer", "jwks_uri", "secret", "audiences", "algorithms")


def _plain_mode(data: Any) -> Any:
    return {"mode": data} if isinstance(data, str) else data


class RoutePolicy(BaseModel):
    """A route's ``auth:``: ``required`` (the default), ``optional``, ``none`` or ``shadow``.

    ``shadow`` checks the credential as ``required`` would (roles, scopes and issuers too)
    and reports what it would have done, but never refuses and never grants an identity:
    the request goes upstream as an anonymous one.

    ``roles`` admits a caller holding any one of them; ``scopes`` requires every one (from the
    ``scope`` or ``scp`` claim). A route may write the plain strings
    ``required``/``optional``/``none`` for ``{mode: ...}`` (see ``RouteAuth``).

    With several identity providers (Envoy's ``requires``/``provider_name``, by issuer name:
    an issuer's ``name``, else its ``issuer``; ``api_key`` stands for API-key callers):

    - ``issuers: [main, api_key]`` accepts callers vouched for by these only; any other
      caller gets 403 ``issuer_not_accepted``. Omitted: every configured issuer.
    - ``roles: [admin]`` (a list) applies to every accepted caller, whatever the issuer.
    - ``roles: {main: [admin], partner: [partner-admin]}`` (a mapping) asks each issuer's
      callers for a role of their own. Without ``issuers``, the mapping's keys are the
      accepted issuers (an issuer it does not name is refused, never let in without a
      role). With ``issuers``, every key must be listed there, and a listed issuer the
      mapping leaves out needs no role (``partner: []`` says the same explicitly).

    Warning:
        Roles are the IdP's words: ``admin`` from a partner's IdP is whatever the partner
        says it is. Use the mapping (or ``issuers``) whenever more than one issuer is
        configured and a role guards something.
    """

    model_config = _STRICT

    mode: Literal["required", "optional", "none", "shadow"] | None = Field(
        default=None,
        description="Default: required when the gateway has an auth block. shadow: check "
        "as required would and report would-be rejections, but forward every request as "
        "anonymous (no identity headers).",
    )
    issuers: list[Text] | None = Field(
        default=None, description="Issuer names (or api_key) this route accepts; default all."
    )
    roles: list[Text] | dict[Text, list[Text]] = Field(
        default=[], description="Any one of these roles, or {issuer name: [roles]}."
    )
    scopes: list[Text] = []

    @model_validator(mode="before")
    @classmethod
    def _plain_string(cls, data: Any) -> Any:
        return _plain_mode(data)

    @model_validator(mode="after")
    def _checks_need_identity(self) -> RoutePolicy:
        if (self.roles or self.scopes) and self.effective_mode not in ("required", "shadow"):
            raise ValueError("roles and scopes need mode: required or shadow")
        if isinstance(self.roles, dict) and not self.roles:
            raise ValueError("roles: an empty mapping accepts no issuer; use [] for no roles")
        if self.issuers is None:
            return self
        if self.effective_mode == "none":
            raise ValueError("issuers need mode: required, optional or shadow")
        if not self.issuers:
            raise ValueError("issuers: list at least one (omit the key to accept every issuer)")
        if isinstance(self.roles, dict):
            extra = [ref for ref in self.roles if ref not in self.issuers]
            if extra:
                raise ValueError(f"roles names issuer {extra[0]!r}, which issuers does not list")
        return self

    @property
    def effective_mode(self) -> Literal["required", "optional", "none", "shadow"]:
        """Return the mode, ``required`` when none was written."""
        return self.mode or "required"

    def accepted_sources(self) -> frozenset[str] | None:
        """Return the issuer names (and ``api_key``) accepted here; None for every one."""
        if self.issuers is not None:
            return frozenset(self.issuers)
        if isinstance(self.roles, dict):
            return frozenset(self.roles)
        return None

    def roles_for(self, source: str) -> list[str]:
        """Return the roles (any one of them) a caller vouched for by ``source`` needs."""
        if isinstance(self.roles, dict):
            return self.roles.get(source, [])
        return self.roles

    def describe(self) -> str:
        """Say in a few words what this policy requires (for config error messages)."""
        if self.effective_mode == "none":
            return "needs no authentication"
        if self.effective_mode == "shadow":
            return "is in shadow mode (checks, never refuses, forwards no identity)"
        parts = []
        if isinstance(self.roles, dict):
            parts.append(f"requires roles {_listing(self.roles)}")
        elif self.roles:
            parts.append(f"requires roles [{', '.join(self.roles)}]")
        if self.scopes:
            parts.append(f"requires scopes [{', '.join(self.scopes)}]")
        if self.issuers is not None:
            parts.append(f"accepts only issuers [{', '.join(self.issuers)}]")
        if not parts:
            required = self.effective_mode == "required"
            parts.append("requires authentication" if required else "has auth: optional")
        return " and ".join(parts)


def _listing(roles: dict[str, list[str]]) -> str:
    return "{" + ", ".join(f"{ref}: [{', '.join(names)}]" for ref, names in roles.items()) + "}"


# A route's ``auth:`` as written: a RoutePolicy, or one of its modes alone (``auth: optional``).
# RoutePolicy reads both; this type makes the JSON schema say so (json_schema_input_type).
RouteAuth = Annotated[
    RoutePolicy,
    BeforeValidator(
        _plain_mode,
        json_schema_input_type=Literal["required", "optional", "none", "shadow"] | RoutePolicy,
    ),
]


def check_jwks_uri(uri: str) -> str:
    """Return ``uri`` if keys may be fetched from it: https://, or http:// on loopback only."""
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{uri!r} must be an https:// URL")
    if parts.username or parts.password or parts.fragment:
        raise ValueError(f"{uri!r} must not carry user:password or a fragment")
    # APPSEC: keys fetched over plain http could be replaced by anyone on the path; only the
    # loopback interface (a local sidecar, tests) is trusted without TLS.
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"{uri!r}: http:// is allowed only on loopback; use https://")
    return uri


def check_exclude_path(path: str) -> str:
    """Return the canonical form of an ``exclude_paths`` entry, or raise ValueError."""
    prefix, star = (path[:-3], "/**") if path.endswith("/**") else (path, "")
    if "*" in prefix or "{" in prefix:
        raise ValueError(f"{path!r}: only a trailing '/**' wildcard is supported")
    segments = prefix.split("/")[1:] if prefix else []
    if not path.startswith("/") or any(s in (".", "..") for s in segments):
        raise ValueError(f"{path!r} must be a canonical path starting with '/'")
    if not prefix:
        return "/**"
    try:
        canonical = canonicalize_config(prefix)
    except InvalidPath as ex:
        raise ValueError(f"{path!r}: {ex.message}") from None
    if canonical != prefix and "%" not in prefix:
        raise ValueError(f"{path!r} is not canonical (did you mean {canonical!r}?)")
    return canonical + star


def _check_algorithms(algorithms: list[str] | None, *, hmac: bool) -> None:
    if algorithms is None:
        return
    if not algorithms:
        raise ValueError("algorithms must list at least one algorithm")
    for alg in algorithms:
        if alg.lower() == "none":
            raise ValueError("algorithm 'none' is never allowed")
        if alg not in HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS:
            known = sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS)
            raise ValueError(f"unknown algorithm {alg!r} (known: {known})")
        # APPSEC: a secret verifies only HS*, a JWKS only asymmetric algorithms; mixing them is
        # how a public key ends up used as an HMAC secret.
        if hmac and alg not in HMAC_ALGORITHMS:
            raise ValueError(f"algorithm {alg} needs a jwks_uri, not a secret")
        if not hmac and alg in HMAC_ALGORITHMS:
            raise ValueError(f"algorithm {alg} needs a secret, not a jwks_uri")


def _check_secret_strength(secret: SecretStr | None, algorithms: list[str] | None) -> None:
    """Refuse a secret shorter than the hash of the strongest HS* algorithm it signs."""
    if secret is None:
        return
    need = max(_HMAC_BYTES.get(alg, MIN_SECRET_BYTES) for alg in algorithms or ["HS256"])
    if len(secret.get_secret_value().encode()) < need:
        raise ValueError(f"the secret must be at least {need} bytes for {algorithms}")


def _check_header_name(header: str) -> None:
    if not _TOKEN.fullmatch(header):
        raise ValueError(f"{header!r} is not a valid header name")
    if canonical_name(header) in _RESERVED_HEADERS:
        raise ValueError(f"{header!r} is a header the gateway or HTTP owns")


def _forwardable_issuer(issuer: str) -> str:
    # APPSEC: the issuer is forwarded as a header value (X-User-Issuer); refuse at load what
    # could split or smuggle a header rather than send it.
    try:
        return check_header_value(issuer)
    except ValueError as ex:
        raise ValueError(f"{issuer!r} cannot be forwarded as a header value: {ex}") from None


def _check_claim_headers(mapping: dict[str, str]) -> None:
    seen: set[str] = set()
    for claim, header in mapping.items():
        if not claim or len(claim) > 128:
            raise ValueError(f"claim name {claim!r} must be 1 to 128 characters")
        _check_header_name(header)
        folded = canonical_name(header)
        if folded in seen:
            raise ValueError(f"header {header!r} is mapped from two claims")
        seen.add(folded)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
