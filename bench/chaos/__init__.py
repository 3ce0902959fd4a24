"""The fault suite (`python -m bench.chaos`): the whole system under faults, then an audit.

QuickBooks answers with throttling, server errors, dropped connections, a real timeout and
expired tokens; webhooks get lost; the sync workers and the api are SIGKILLed and restarted;
the Kafka broker and the database are killed and restarted. Afterwards every invoice the api
shows is compared with QuickBooks (the emulator): nothing may be lost, duplicated or stale.
"""
