"""The dashboard's rendering of the customer's QBO state, run by Node without a browser (the
browser tests in tests/e2e need Chromium): an inactive or merged-away customer is marked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

APP_JS = Path(__file__).parents[3] / "services" / "api" / "static" / "app.js"
NODE = shutil.which("node")


def customer_state(customer: dict[str, object]) -> str:
    source = APP_JS.read_text(encoding="utf-8")
    match = re.search(r"^function customerState\(customer\) \{\n.*?^\}\n", source, re.M | re.S)
    assert match, "app.js defines customerState(customer)"
    script = f"{match.group(0)}\nprocess.stdout.write(customerState({json.dumps(customer)}));"
    assert NODE is not None
    done = subprocess.run(  # noqa: S603 - our own script, no shell
        [NODE, "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


@pytest.mark.skipif(NODE is None, reason="needs Node.js")
def test_an_inactive_customer_is_marked_and_an_active_or_unread_one_is_not() -> None:
    assert customer_state({"active": False, "merged_from": None}) == "Inactive in QuickBooks"
    assert customer_state({"active": False, "merged_from": "57"}) == (
        "Inactive in QuickBooks (merged)"
    )
    assert customer_state({"active": True, "merged_from": "57"}) == ""
    assert customer_state({"active": None}) == ""


def test_the_page_shows_the_mark_from_the_customer_view() -> None:
    source = APP_JS.read_text(encoding="utf-8")
    assert '$("customer-inactive").hidden = customer.active !== false;' in source
    html = (APP_JS.parent / "index.html").read_text(encoding="utf-8")
    assert 'id="customer-inactive"' in html and "hidden" in html
