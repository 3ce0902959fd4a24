"""The fields Intuit returns on an invoice, a customer and a payment beyond the money.

Copied from recorded responses, so a client that parses the emulator's objects
also parses production's:

* invoices: a sandbox invoice read back in full (a public gist recording
  "Invoice Sparse Update" tests against the sandbox, 2020) and Intuit's Invoice
  entity reference - the four ``Allow*Payment`` flags, ``CustomField`` (the
  sandbox company's "Crew #" definition, with no value unless one is set),
  ``BillAddr``/``ShipAddr`` copied from the customer with their own address Ids,
  ``BillEmail``, ``SalesTermRef``, line ``Description`` and ``TaxCodeRef``,
  ``LinkedTxn`` naming the payments applied; ``DeliveryInfo`` once emailed;
  ``ExchangeRate``, ``HomeTotalAmt`` and ``HomeBalance`` only in a currency other
  than the company's (Invoice reference: "applicable if multicurrency is enabled");
* payments: the sample of Intuit's Payment entity reference - a line per invoice
  paid, its ``LinkedTxn`` and the ``LineEx`` name/value triple (``txnId``,
  ``txnOpenBalance``, ``txnReferenceNumber``) that Intuit's JAXB serialiser adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

Entity = dict[str, Any]

HOME_CURRENCY = "USD"
ALLOW_ONLINE_FLAGS: tuple[str, ...] = (
    "AllowIPNPayment",
    "AllowOnlinePayment",
    "AllowOnlineCreditCardPayment",
    "AllowOnlineACHPayment",
)
SANDBOX_CUSTOM_FIELD: Mapping[str, str] = {
    "DefinitionId": "1",
    "Name": "Crew #",
    "Type": "StringType",
}
NET_30: Mapping[str, str] = {"value": "3"}
NON_TAXABLE: Mapping[str, str] = {"value": "NON"}
UNDEPOSITED_FUNDS: Mapping[str, str] = {"value": "4"}
CENT = Decimal("0.01")
ADDRESS_FIELDS: tuple[str, ...] = (
    "Line1",
    "Line2",
    "Line3",
    "Line4",
    "Line5",
    "City",
    "Country",
    "CountrySubDivisionCode",
    "PostalCode",
    "Lat",
    "Long",
)

_NAME_VALUE = {
    "name": "{http://schema.intuit.com/finance/v3}NameValue",
    "declaredType": "com.intuit.schema.finance.v3.NameValue",
    "scope": "javax.xml.bind.JAXBElement$GlobalScope",
    "nil": False,
    "globalScope": True,
    "typeSubstituted": False,
}


def address(address_id: str, fields: Mapping[str, Any]) -> Entity:
    """An address as Intuit returns it: the given lines plus its own ``Id``."""
    out: Entity = {"Id": address_id}
    for key in ADDRESS_FIELDS:
        if isinstance(fields.get(key), str):
            out[key] = fields[key]
    return out


def invoice_defaults(customer: Mapping[str, Any]) -> Entity:
    """Header fields QBO fills on every invoice from the company and the customer."""
    out: Entity = {flag: False for flag in ALLOW_ONLINE_FLAGS}
    out["CustomField"] = [dict(SANDBOX_CUSTOM_FIELD)]
    out["SalesTermRef"] = dict(NET_30)
    for key in ("BillAddr", "ShipAddr"):
        if isinstance(customer.get(key), Mapping):
            out[key] = dict(customer[key])
    email = customer.get("PrimaryEmailAddr")
    if isinstance(email, Mapping) and email.get("Address"):
        out["BillEmail"] = {"Address": email["Address"]}
    return out


def sales_line_defaults(line: Entity) -> None:
    """``Description`` and the line's ``TaxCodeRef``, as QBO copies them from the item."""
    detail = line.get("SalesItemLineDetail")
    if not isinstance(detail, dict):
        return
    item = detail.get("ItemRef")
    if "Description" not in line and isinstance(item, Mapping) and item.get("name"):
        line["Description"] = str(item["name"])
    detail.setdefault("TaxCodeRef", dict(NON_TAXABLE))


def is_foreign(invoice: Mapping[str, Any]) -> bool:
    ref = invoice.get("CurrencyRef")
    return isinstance(ref, Mapping) and ref.get("value", HOME_CURRENCY) != HOME_CURRENCY


def set_home_amounts(invoice: Entity) -> None:
    """``HomeTotalAmt``/``HomeBalance`` = amount x ``ExchangeRate``, to the cent.

    Only a foreign-currency invoice carries them; a home-currency one has none.
    """
    if not is_foreign(invoice):
        for key in ("ExchangeRate", "HomeTotalAmt", "HomeBalance"):
            invoice.pop(key, None)
        return
    rate = invoice.get("ExchangeRate")
    if not isinstance(rate, Decimal):
        rate = Decimal(str(rate)) if rate is not None else Decimal(1)
        invoice["ExchangeRate"] = rate
    invoice["HomeTotalAmt"] = (invoice["TotalAmt"] * rate).quantize(CENT)
    invoice["HomeBalance"] = (invoice["Balance"] * rate).quantize(CENT)


def link(entity: Entity, txn_id: str, txn_type: str) -> None:
    links = entity.setdefault("LinkedTxn", [])
    if not any(x.get("TxnId") == txn_id and x.get("TxnType") == txn_type for x in links):
        links.append({"TxnId": txn_id, "TxnType": txn_type})


def payment_line(invoice: Mapping[str, Any], amount: Decimal, open_balance: Decimal) -> Entity:
    """One invoice paid by a payment, with Intuit's ``LineEx`` name/value triple."""
    pairs = (
        ("txnId", invoice["Id"]),
        ("txnOpenBalance", f"{open_balance.quantize(CENT)}"),
        ("txnReferenceNumber", invoice.get("DocNumber", "")),
    )
    return {
        "Amount": amount,
        "LineEx": {"any": [{**_NAME_VALUE, "value": {"Name": n, "Value": v}} for n, v in pairs]},
        "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}],
    }
