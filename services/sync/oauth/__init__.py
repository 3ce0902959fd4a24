"""Connecting a QBO company: Intuit's OAuth 2.0 endpoints and the signed `state`."""
