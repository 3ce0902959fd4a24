"""The real adapters and the fakes fit the ports of services/sync/ports.py.

mypy --strict checks the assignments below (a class that drifts from its port fails type
checking); the test checks at run time that each offers every method of its port, under the
same parameter names, so a fake cannot silently accept a call the real class would refuse.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from services.sync import ports
from services.sync.events import InvoiceEvents
from services.sync.quickbooks.client import QboClient
from services.sync.store import (
    CdcCheckpoints,
    CommandLog,
    CustomerMappings,
    InvoiceStore,
    Outbox,
    RejectedInvoices,
)
from services.sync.vault import TokenVault
from tests.unit.sync import fakes

REAL: tuple[
    type[ports.QboReader],
    type[ports.Connections],
    type[ports.Invoices],
    type[ports.Mappings],
    type[ports.EventPublisher],
    type[ports.OutboxEntries],
    type[ports.Checkpoints],
    type[ports.Rejections],
    type[ports.CommandRecords],
] = (
    QboClient,
    TokenVault,
    InvoiceStore,
    CustomerMappings,
    InvoiceEvents,
    Outbox,
    CdcCheckpoints,
    RejectedInvoices,
    CommandLog,
)
FAKE: tuple[
    type[ports.Connections],
    type[ports.Invoices],
    type[ports.Mappings],
    type[ports.EventPublisher],
    type[ports.OutboxEntries],
    type[ports.Checkpoints],
    type[ports.Rejections],
    type[ports.CommandRecords],
] = (
    fakes.FakeVault,
    fakes.FakeInvoices,
    fakes.FakeMappings,
    fakes.FakeEvents,
    fakes.FakeOutbox,
    fakes.FakeCheckpoints,
    fakes.FakeRejections,
    fakes.FakeCommandLog,
)
PORTS = [
    ports.QboReader,
    ports.Connections,
    ports.Invoices,
    ports.Mappings,
    ports.EventPublisher,
    ports.OutboxEntries,
    ports.Checkpoints,
    ports.Rejections,
    ports.CommandRecords,
]


def _methods(port: type[Any]) -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(member).parameters)
        for name, member in vars(port).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


# Each port with the real class and the fake that implement it (QBO has no fake: the tests
# run the real client against the emulator).
IMPLEMENTATIONS = [(PORTS[0], [REAL[0]])] + [
    (port, [real, fake]) for port, real, fake in zip(PORTS[1:], REAL[1:], FAKE, strict=True)
]


@pytest.mark.parametrize(
    ("port", "implementations"), IMPLEMENTATIONS, ids=[p.__name__ for p in PORTS]
)
def test_each_adapter_offers_its_ports_methods_with_the_same_parameters(
    port: type[Any], implementations: list[type[Any]]
) -> None:
    wanted = _methods(port)
    assert wanted
    for cls in implementations:
        for name, parameters in wanted.items():
            offered = list(inspect.signature(getattr(cls, name)).parameters)
            assert offered == parameters, f"{cls.__name__}.{name}"
