"""What taskexec needs of the Redis server's own settings, checked at start."""

from __future__ import annotations

import redis


def eviction_risk(client: redis.Redis) -> str | None:
    """A warning when the server may evict keys (queue streams, records) under memory pressure.

    None when it cannot (noeviction, or no memory limit) or when CONFIG is not allowed.
    """
    try:
        config = client.config_get("maxmemory*")
    except redis.ResponseError:
        return None  # managed services often disable CONFIG; nothing to say then
    policy = str(config.get("maxmemory-policy", "noeviction"))
    limit = int(config.get("maxmemory", 0) or 0)
    if policy == "noeviction" or limit == 0:
        return None
    return (f"Redis maxmemory-policy is {policy} with maxmemory {limit}: under memory pressure "
            "the server may evict queue streams, task records and heartbeats, losing tasks; set "
            "maxmemory-policy noeviction")
