"""`python -m bench [--invoices N ...]`: run the benchmarks and print the table (see run.py)."""

from __future__ import annotations

from bench.options import parse_options
from bench.run import main

if __name__ == "__main__":
    main(parse_options())
