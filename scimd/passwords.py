"""Password hashing for the write-only `password` attribute (RFC 7643 §4.1.1): salted scrypt,
never stored or logged in clear, never returned."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt cost: about 16 MiB and tens of milliseconds per hash, a deliberate price per password write.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    scheme, n, r, p, salt, digest = stored.split("$")
    if scheme != "scrypt":
        return False
    candidate = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                               dklen=32)
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
