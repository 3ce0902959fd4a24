"""QuickBooks Online emulator."""
