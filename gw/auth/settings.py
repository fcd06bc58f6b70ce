"""The ``auth:`` block and the per-route ``auth:`` policy, as frozen pydantic models.

The seed 003 block loads unchanged::

    {"type": "jwt", "jwks_uri": "https://auth.example.com/.well-known/jwks.json",
     "issuer": "https://auth.example.com", "audiences": ["api.example.com"],
     "exclude_paths": ["/api/health", "/api/auth/login", "/api/auth/register"]}

The top-level ``issuer``/``jwks_uri``/``secret``/``audiences``/``algorithms`` are shorthand for
a one-element ``issuers`` list; several identity providers are listed under ``issuers``.

``exclude_paths`` are matched against the *canonical* path (``gw.paths.canonicalize``): an
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

from gw.errors import InvalidPath
from gw.headers import canonical_name
from gw.paths import canonicalize_config

_STRICT = ConfigDict(extra="forbid", frozen=True)
Text = Annotated[str, Field(min_length=1, max_length=512)]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_JWKS_ALGORITHMS = ("RS256", "ES256", "EdDSA")
DEFAULT_SECRET_ALGORITHMS = ("HS256",)
DEFAULT_CLAIM_HEADERS = {"sub": "X-User-Id", "role": "X-User-Role"}
MIN_SECRET_BYTES = 32
_HMAC_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
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


class IssuerSettings(BaseModel):
    """One identity provider: tokens whose ``iss`` is ``issuer`` are checked with its keys."""

    model_config = _STRICT

    issuer: str = Field(min_length=1, max_length=512, description="Exact `iss` value.")
    jwks_uri: str | None = Field(
        default=None, description="https:// URL of the key set (http:// only on loopback)."
    )
    secret: SecretStr | None = Field(
        default=None, description="HS256 shared secret (write `${JWT_SECRET}`), 32+ bytes."
    )
    audiences: list[Text] = Field(
        min_length=1, description="Accepted `aud` values; a token must name one of them."
    )
    algorithms: list[str] | None = Field(
        default=None,
        description="Allowed `alg` values (default RS256, ES256, EdDSA for a JWKS; HS256 "
        "for a secret). `none` is never allowed.",
    )

    _jwks_uri = field_validator("jwks_uri")(_optional_jwks_uri)
    _secret = field_validator("secret")(_long_secret)

    @model_validator(mode="after")
    def _keys_and_algorithms(self) -> IssuerSettings:
        if (self.jwks_uri is None) == (self.secret is None):
            raise ValueError(f"issuer {self.issuer!r}: give exactly one of jwks_uri or secret")
        _check_algorithms(self.algorithms, hmac=self.secret is not None)
        _check_secret_strength(self.secret, self.algorithms)
        return self

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
    jwks_cache_seconds: float = Field(default=300, ge=1, le=86400)
    jwks_refetch_cooldown: float = Field(
        default=30, ge=1, le=3600, description="Least time between two fetches of a JWKS."
    )
    jwks_timeout: float = Field(default=2, gt=0, le=30)
    max_token_bytes: int = Field(default=8192, ge=256, le=65536)
    api_keys: ApiKeySettings | None = None

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
        return self

    def _shorthand(self) -> tuple[IssuerSettings, ...]:
        """Turn the top-level issuer fields (seed 003 shape) into a one-issuer list."""
        given = [k for k in _SHORTHAND if getattr(self, k) is not None]
        if not given:
            return ()
        if self.issuers:
            raise ValueError(f"use either {given} or issuers, not both")
        if self.issuer is None:
            raise ValueError("issuer is required with jwks_uri or secret (the expected `iss`)")
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
    """A route's ``auth:``: ``required`` (the default), ``optional`` or ``none``.

    ``roles`` admits a caller holding any one of them; ``scopes`` requires every one (from the
    ``scope`` or ``scp`` claim). A route may write the plain strings
    ``required``/``optional``/``none`` for ``{mode: ...}`` (see ``RouteAuth``).
    """

    model_config = _STRICT

    mode: Literal["required", "optional", "none"] | None = Field(
        default=None, description="Default: required when the gateway has an auth block."
    )
    roles: list[Text] = []
    scopes: list[Text] = []

    @model_validator(mode="before")
    @classmethod
    def _plain_string(cls, data: Any) -> Any:
        return _plain_mode(data)

    @model_validator(mode="after")
    def _checks_need_identity(self) -> RoutePolicy:
        if (self.roles or self.scopes) and self.effective_mode != "required":
            raise ValueError("roles and scopes need mode: required")
        return self

    @property
    def effective_mode(self) -> Literal["required", "optional", "none"]:
        """Return the mode, ``required`` when none was written."""
        return self.mode or "required"


# A route's ``auth:`` as written: a RoutePolicy, or one of its modes alone (``auth: optional``).
# RoutePolicy reads both; this type makes the JSON schema say so (json_schema_input_type).
RouteAuth = Annotated[
    RoutePolicy,
    BeforeValidator(
        _plain_mode,
        json_schema_input_type=Literal["required", "optional", "none"] | RoutePolicy,
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


def _check_claim_headers(mapping: dict[str, str]) -> None:
    seen: set[str] = set()
    for claim, header in mapping.items():
        if not claim or len(claim) > 128:
            raise ValueError(f"claim name {claim!r} must be 1 to 128 characters")
        if not _TOKEN.fullmatch(header):
            raise ValueError(f"{header!r} is not a valid header name")
        folded = canonical_name(header)
        if folded in _RESERVED_HEADERS:
            raise ValueError(f"{header!r} is a header the gateway or HTTP owns")
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
