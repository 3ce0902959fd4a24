"""Connect QBO companies and map customers without a browser.

The OAuth consent is skipped the way the emulator allows (`/_emulator/tokens/issue` gives the
token response Intuit would return after consent) and the grant is stored through the sync
service's own `TokenVault`, so the workers find exactly what the OAuth callback would have
stored. Mapping goes through the sync service's HTTP endpoint with its token, as an operator's
would.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import aiohttp

from bench.emulator_admin import EmulatorAdmin
from services.common.settings import Settings
from services.sync.access import DEV_SYNC_TOKEN
from services.sync.app import sync_service
from services.sync.oauth.intuit import TokenGrant


async def connect_realms(
    settings: Settings, admin: EmulatorAdmin, realm_ids: Sequence[str], user: str
) -> None:
    async with sync_service(settings) as service:
        for realm_id in realm_ids:
            body = await admin.issue_tokens(realm_id)
            grant = TokenGrant.from_response(body, datetime.now(UTC))
            await service.vault.connect(realm_id, user, grant)


async def map_customer(
    http: aiohttp.ClientSession,
    sync_url: str,
    local_customer_id: str,
    realm_id: str,
    qbo_customer_id: str,
) -> None:
    async with http.post(
        f"{sync_url}/customers/{local_customer_id}/mapping",
        json={"realm_id": realm_id, "qbo_customer_id": qbo_customer_id},
        # The runs are local on loopback, where the sync service accepts its development token.
        headers={"Authorization": f"Bearer {DEV_SYNC_TOKEN}"},
    ) as response:
        if response.status != 200:
            raise RuntimeError(
                f"mapping {local_customer_id}: {response.status} {await response.text()}"
            )
