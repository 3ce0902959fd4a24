"""What the services say about their own work: MongoDB commands sent (the opt-in counter of
`services.common.mongo`, at the sync service's /stats and the api's /metrics), events projected
and requests answered (the api's /metrics)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from services.sync.access import DEV_SYNC_TOKEN

# /stats names every connected realm, so it takes the sync service's token (the local one here).
SYNC_AUTH = {"Authorization": f"Bearer {DEV_SYNC_TOKEN}"}


async def sync_mongo_commands(http: aiohttp.ClientSession, sync_url: str) -> int:
    async with http.get(f"{sync_url}/stats", headers=SYNC_AUTH) as response:
        response.raise_for_status()
        body = await response.json()
    rows = body.get("mongo_commands")
    if rows is None:
        raise RuntimeError("the sync service does not count MongoDB commands")
    return sum(int(row["count"]) for row in rows)


@dataclass(frozen=True)
class ApiCounts:
    commands: Counter[str]  # by caller
    events_projected: int  # every outcome
    requests: int  # every HTTP request answered


async def api_counts(http: aiohttp.ClientSession, api_url: str) -> ApiCounts:
    async with http.get(f"{api_url}/metrics") as response:
        text = await response.text()
    commands: Counter[str] = Counter()
    events = requests = 0
    for family in text_string_to_metric_families(text):
        totals = [s for s in family.samples if s.name.endswith("_total")]
        if family.name == "qbo_mongo_commands":
            for sample in totals:
                commands[sample.labels["caller"]] += int(sample.value)
        elif family.name == "qbo_api_events_projected":
            events += sum(int(s.value) for s in totals)
        elif family.name == "qbo_api_requests":
            requests += sum(int(s.value) for s in totals)
    return ApiCounts(commands, events, requests)
