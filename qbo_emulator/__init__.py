"""QuickBooks Online emulator.

Serves Intuit-shaped OAuth 2.0, Accounting API v3 (query, read, CDC) and signed
webhooks from memory, plus a ``/_emulator`` admin API for tests. Start with
``python -m qbo_emulator`` or ``qbo_emulator.app.create_app``; see
``qbo_emulator.testing.running_emulator`` for tests.
"""

__version__ = "0.1.0"
