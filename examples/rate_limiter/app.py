"""A token-bucket rate limiter: one Durable Object per client, state in the KV API.

    GET /api/<anything>   allowed: 200; over the limit: 429 with a Retry-After header

The client is identified by the X-Client-Id header (or the remote address). Each client's bucket
holds CAPACITY tokens and refills at RATE tokens per second.
"""

import time

from duro import DurableObject, Response, WorkerEntrypoint

CAPACITY = 10
RATE = 1.0  # tokens per second


class RateLimiter(DurableObject):
    async def take(self) -> float:
        """Take one token. Returns 0 if allowed, else the seconds to wait before retrying."""
        now = time.time()
        bucket = await self.ctx.storage.get("bucket") or {"tokens": float(CAPACITY), "at": now}
        tokens = min(CAPACITY, bucket["tokens"] + (now - bucket["at"]) * RATE)
        if tokens >= 1:
            await self.ctx.storage.put("bucket", {"tokens": tokens - 1, "at": now})
            return 0.0
        await self.ctx.storage.put("bucket", {"tokens": tokens, "at": now})
        return (1 - tokens) / RATE


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        client = request.headers.get("x-client-id") or request.headers.get("x-forwarded-for") or "anonymous"
        wait = await self.env.LIMITER.get_by_name(client).take()
        if wait > 0:
            return Response(f"slow down, {client}", status=429,
                            headers={"retry-after": str(max(1, round(wait)))})
        return Response(f"hello, {client}")
