"""Digest authentication for 401/407 challenges (RFC 3261 §22, RFC 7616, RFC 8760).

Supports MD5, SHA-256 and SHA-512-256, each with its `-sess` variant, and
`qop=auth` (also `auth-int` when that is the only option offered). A 401 is
answered with `Authorization`, a 407 with `Proxy-Authorization`; the digest `uri`
is the Request-URI. The client retries once per challenge.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from dataclasses import dataclass

from callfleet.telephony.sip.errors import SipParseError
from callfleet.telephony.sip.message import SipResponse
from callfleet.telephony.sip.uri import split_header_list

__all__ = [
    "Challenge",
    "Credentials",
    "build_authorization",
    "parse_challenge",
    "parse_digest_fields",
    "preferred_challenge",
]

_HASHES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}
_ALGORITHM_PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def _digest_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in split_header_list(text):
        name, sep, value = part.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params[name.strip().lower()] = value
    return params


def parse_digest_fields(value: str) -> dict[str, str]:
    """The parameters of a Digest header value (`Authorization`, `Proxy-Authorization`,
    a challenge), names lower-cased and quotes removed; {} for another scheme."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return {}
    return _digest_params(rest)


def parse_challenge(value: str) -> Challenge:
    """Parse a `WWW-Authenticate`/`Proxy-Authenticate` value (Digest only)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(f"unsupported auth scheme {scheme[:20]!r}")
    params = _digest_params(rest)
    if "realm" not in params or "nonce" not in params:
        raise SipParseError("digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    base = algorithm.upper().removesuffix("-SESS")
    if base not in _HASHES:
        raise SipParseError(f"unsupported digest algorithm {algorithm!r}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def preferred_challenge(response: SipResponse) -> tuple[str, Challenge] | None:
    """What to answer a 401/407 with: the header to send (`Authorization` or
    `Proxy-Authorization`) and its strongest parseable Digest challenge; None if none."""
    if response.status not in (401, 407):
        return None
    proxy = response.status == 407
    header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    challenges = []
    for value in response.headers.get_all(header):
        with contextlib.suppress(SipParseError):
            challenges.append(parse_challenge(value))
    if not challenges:
        return None
    challenges.sort(
        key=lambda c: _ALGORITHM_PREFERENCE.index(c.algorithm.upper().removesuffix("-SESS"))
    )
    return ("Proxy-Authorization" if proxy else "Authorization"), challenges[0]


def _hash(algorithm: str, text: str) -> str:
    name = _HASHES[algorithm.upper().removesuffix("-SESS")]
    return hashlib.new(name, text.encode("utf-8")).hexdigest()


def build_authorization(
    challenge: Challenge,
    credentials: Credentials,
    *,
    method: str,
    uri: str,
    body: bytes = b"",
    nonce_count: int = 1,
    cnonce: str | None = None,
) -> str:
    """The value of the `Authorization`/`Proxy-Authorization` header answering `challenge`."""
    alg = challenge.algorithm
    cnonce = cnonce or secrets.token_hex(8)
    nc = f"{nonce_count:08x}"
    ha1 = _hash(alg, f"{credentials.username}:{challenge.realm}:{credentials.password}")
    if alg.upper().endswith("-SESS"):
        ha1 = _hash(alg, f"{ha1}:{challenge.nonce}:{cnonce}")
    qop: str | None = None
    if "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    if qop == "auth-int":
        body_hash = hashlib.new(_HASHES[alg.upper().removesuffix("-SESS")], body).hexdigest()
        ha2 = _hash(alg, f"{method}:{uri}:{body_hash}")
    else:
        ha2 = _hash(alg, f"{method}:{uri}")
    if qop:
        response = _hash(alg, f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    else:
        response = _hash(alg, f"{ha1}:{challenge.nonce}:{ha2}")
    parts = [
        f'username="{credentials.username}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={alg}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc}", f'cnonce="{cnonce}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)
