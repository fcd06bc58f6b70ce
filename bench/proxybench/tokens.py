"""Keys and bearer tokens for the gw-full rows, minted afresh for each run with PyJWT.

PyJWT and cryptography come from gw's virtualenv; the harness itself stays standard library
only and runs ``python -m proxybench.tokens ALG`` with that interpreter (``mint_with``).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ISSUER = "https://auth.bench.gw.local"
AUDIENCE = "gw"
USERS = 8  # distinct subjects: the per-user limit keeps one bucket each
EXPIRES = 4102444800  # 2100-01-01: a run never outlives its tokens
KID = "bench-rs256"
ALGORITHMS = ("RS256", "HS256")


@dataclass(frozen=True)
class Credentials:
    """What a gw-full row is configured with, and what wrk sends it.

    ``secret`` is set for HS256; ``jwks`` (the public key set to serve) for RS256.
    """

    alg: str
    tokens: tuple[str, ...]
    secret: str | None = None
    jwks: dict[str, Any] | None = field(default=None)

    def to_json(self) -> str:
        """Return the credentials as one JSON document."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Credentials:
        """Read what ``to_json`` wrote."""
        raw = json.loads(text)
        return cls(raw["alg"], tuple(raw["tokens"]), raw["secret"], raw["jwks"])


def subjects(count: int = USERS) -> list[str]:
    """Return the user ids the tokens are issued to: usr_bench_01, usr_bench_02, ..."""
    return [f"usr_bench_{n:02d}" for n in range(1, count + 1)]


def claims(subject: str) -> dict[str, Any]:
    """Return the claims of one user's token: issuer, audience, role and a far expiry."""
    return {
        "iss": ISSUER,
        "sub": subject,
        "aud": AUDIENCE,
        "role": "member",
        "iat": 1700000000,
        "exp": EXPIRES,
    }


def mint(alg: str, users: int = USERS) -> Credentials:
    """Make a fresh key (HS256 secret or RS256 key pair) and one token per user.

    Raises:
        ValueError: an algorithm other than RS256 or HS256.
    """
    import jwt  # gw's venv; see the module docstring

    if alg == "HS256":
        secret = secrets.token_urlsafe(48)
        tokens = [jwt.encode(claims(sub), secret, algorithm="HS256") for sub in subjects(users)]
        return Credentials(alg, tuple(tokens), secret=secret)
    if alg != "RS256":
        raise ValueError(f"unsupported algorithm {alg!r}; choose from {ALGORITHMS}")
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {"kid": KID}
    tokens = [
        jwt.encode(claims(sub), key, algorithm="RS256", headers=headers) for sub in subjects(users)
    ]
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk = {**public, "kid": KID, "use": "sig", "alg": "RS256"}
    return Credentials(alg, tuple(tokens), jwks={"keys": [jwk]})


def mint_with(python: str, alg: str, timeout: float = 60) -> Credentials:
    """Run ``mint`` under ``python`` (gw's venv) and return its credentials.

    Raises:
        RuntimeError: the interpreter failed (no PyJWT or cryptography there).
    """
    done = subprocess.run(
        [python, "-m", "proxybench.tokens", alg],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"minting {alg} tokens with {python} failed:\n{done.stderr[-1500:]}")
    return Credentials.from_json(done.stdout)


def main(argv: Sequence[str]) -> int:
    """Print the credentials for ``argv[0]`` (RS256 or HS256) as JSON."""
    print(mint(argv[0]).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
