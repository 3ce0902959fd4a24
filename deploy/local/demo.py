"""Make the freshly started local system show something: connect the emulator's company through
the real OAuth redirect flow, map a local customer to the first seeded QBO customer, ask for a
refresh, and print the dashboard URL. Run by `make run` after the services are up.

It uses the development tokens that local mode accepts on loopback: the sync service's (for a
connect link and the mapping, as the app's back end would) and the api's; QBO_DEMO_SYNC_TOKEN and
QBO_DEMO_API_TOKEN name others (the containers' own, from .local/compose/)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp
from yarl import URL

LOCAL_CUSTOMER = "demo-customer"
DEV_API_TOKEN = "dev-token"  # noqa: S105 - local mode's published token
SYNC_TOKEN = os.environ.get("QBO_DEMO_SYNC_TOKEN", "dev-sync-token")
API_TOKEN = os.environ.get("QBO_DEMO_API_TOKEN", DEV_API_TOKEN)
SYNC_AUTH = {"Authorization": f"Bearer {SYNC_TOKEN}"}


async def main(sync_url: str, api_url: str, realm_id: str) -> int:
    # Cookies on 127.0.0.1, and Secure ones over plain HTTP on loopback (the containers' sync
    # marks its cookies Secure): what a browser keeps and sends for these origins.
    port = URL(sync_url).port
    loopback = [
        str(URL.build(scheme="http", host=h, port=port)) for h in ("127.0.0.1", "localhost")
    ]
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=loopback)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.post(
            f"{sync_url}/connect-links", json={"user_id": "demo"}, headers=SYNC_AUTH
        ) as r:
            if r.status != 201:
                print(f"[demo] no connect link: HTTP {r.status} {await r.text()}", file=sys.stderr)
                return 1
            url = URL((await r.json())["connect_url"])
        for _ in range(3):  # connect -> Intuit consent (auto) -> our callback
            async with http.get(url, allow_redirects=False) as r:
                if r.status != 302:
                    body = await r.text()
                    if r.status != 200:
                        print(f"[demo] connecting failed: HTTP {r.status} {body}", file=sys.stderr)
                        return 1
                    break
                url = URL(r.headers["Location"])
        async with http.post(
            f"{sync_url}/customers/{LOCAL_CUSTOMER}/mapping",
            json={"realm_id": realm_id, "qbo_customer_id": "1"},
            headers=SYNC_AUTH,
        ) as r:
            mapping = await r.json()
            if r.status != 200:
                print(f"[demo] mapping failed: {mapping}", file=sys.stderr)
                return 1
        async with http.post(
            f"{api_url}/api/customers/{LOCAL_CUSTOMER}/refreshInvoices",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
        ) as r:
            if r.status != 202:
                print(f"[demo] refresh failed: HTTP {r.status} {await r.text()}", file=sys.stderr)
                return 1
    name = mapping["mapping"]["display_name"]
    print(f"[demo] connected realm {realm_id}; {LOCAL_CUSTOMER} is mapped to QBO customer {name!r}")
    # A token of one's own is a secret: not printed.
    token = API_TOKEN if API_TOKEN == DEV_API_TOKEN else "<API token>"
    print(f"[demo] dashboard: {api_url}/?customer={LOCAL_CUSTOMER}#token={token}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sync-url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-url", default="http://127.0.0.1:8080")
    parser.add_argument("--realm-id", default="9130350000000001")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.sync_url, args.api_url, args.realm_id)))
