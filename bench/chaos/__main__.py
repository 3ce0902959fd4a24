"""`python -m bench.chaos [--seed N ...]`: the fault suite; exits non-zero unless the api ends
up showing exactly what QuickBooks has (no invoice lost, duplicated or stale)."""

from __future__ import annotations

import asyncio
import sys

from bench.chaos.options import parse_options
from bench.chaos.run import run_chaos
from services.common.logging import configure_logging
from services.common.settings import Settings


def main() -> int:
    options = parse_options()
    configure_logging("WARNING", json=False)
    print(f"chaos seed: {options.seed}", flush=True)
    report, result = asyncio.run(run_chaos(options, Settings()))
    print(report.table())
    report.write_json(options.out)
    return 0 if result is not None and result.clean else 1


if __name__ == "__main__":
    sys.exit(main())
