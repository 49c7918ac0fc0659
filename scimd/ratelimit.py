"""Optional per-client rate limit (SCIM_RATE_LIMIT requests per second): a token bucket per
client address, answered with 429 and Retry-After (RFC 6585 §4)."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """Token buckets holding one second of burst; idle buckets are dropped to bound memory."""

    MAX_CLIENTS = 10_000

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def admit(self, client: str) -> float:
        """0 when the request may proceed, else the seconds to wait before retrying."""
        now = time.monotonic()
        with self._lock:
            tokens, stamp = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - stamp) * self.rate)
            if tokens >= 1:
                self._buckets[client] = (tokens - 1, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            if len(self._buckets) > self.MAX_CLIENTS:
                self._forget_idle(now)
            return (1 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        full_after = self.burst / self.rate
        for client, (_, stamp) in list(self._buckets.items()):
            if now - stamp > full_after:
                del self._buckets[client]


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
