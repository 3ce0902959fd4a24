r"""Parser for the QBO query language subset the emulator supports.

QBO's "SQL" is not SQL: only ``AND`` (no ``OR``), no joins, ``ORDERBY`` is one
word, paging is ``STARTPOSITION`` (1-based) / ``MAXRESULTS`` (default 100,
at most 1000), keywords are case-insensitive, and a single quote inside a
literal is escaped with a backslash (``DisplayName = 'O\'Brien'``). Errors are
reported the way Intuit's JavaCC parser words them so that log lines look
familiar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

MAX_RESULTS_LIMIT = 1000
DEFAULT_MAX_RESULTS = 100

Literal = str | Decimal | int | bool

#: Entity names accepted after FROM, keyed by lower case.
KNOWN_ENTITIES: dict[str, str] = {
    "invoice": "Invoice",
    "customer": "Customer",
    "payment": "Payment",
}

COMPARISON_OPS = ("=", "<", ">", "<=", ">=")


class QueryError(ValueError):
    """Base for problems with a query string."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class QueryParseError(QueryError):
    """Syntax error - Intuit answers with code 4000 "Error parsing query"."""


class QueryValidationError(QueryError):
    """Well-formed but unacceptable - Intuit answers with code 4001 "Invalid query"."""


@dataclass(frozen=True)
class Condition:
    """``field op value`` - for ``IN`` ``values`` holds every listed value."""

    field: str
    op: str
    values: tuple[Literal, ...]

    @property
    def value(self) -> Literal:
        return self.values[0]


@dataclass(frozen=True)
class OrderBy:
    field: str
    descending: bool = False


@dataclass(frozen=True)
class Query:
    entity: str
    count: bool = False
    fields: tuple[str, ...] | None = None  # None means "*"
    where: tuple[Condition, ...] = ()
    order_by: tuple[OrderBy, ...] = ()
    start_position: int = 1
    max_results: int = DEFAULT_MAX_RESULTS

    def mentions(self, field: str) -> bool:
        """Whether a WHERE condition uses ``field`` (case-insensitive)."""
        wanted = field.lower()
        return any(c.field.lower() == wanted for c in self.where)


@dataclass(frozen=True)
class _Token:
    kind: str  # "ident" | "string" | "number" | "op" | "punct" | "eof"
    text: str
    value: Literal
    column: int  # 1-based


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:\\.|[^'\\])*')
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),*])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    """,
    re.VERBOSE | re.DOTALL,
)
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)


def tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos] == "'":
                raise QueryParseError(
                    f"Lexical error at line 1, column {pos + 1}. Unterminated string literal"
                )
            raise QueryParseError(
                f'Lexical error at line 1, column {pos + 1}. Encountered: "{text[pos]}"'
            )
        kind = match.lastgroup or ""
        raw = match.group()
        column = pos + 1
        pos = match.end()
        if kind == "ws":
            continue
        if kind == "string":
            value: Literal = _UNESCAPE_RE.sub(r"\1", raw[1:-1])
        elif kind == "number":
            value = Decimal(raw) if "." in raw else int(raw)
        else:
            value = raw
        tokens.append(_Token(kind, raw, value, column))
    tokens.append(_Token("eof", "<EOF>", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    # -- token helpers -------------------------------------------------
    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.current
        if token.kind != "eof":
            self.index += 1
        return token

    def is_keyword(self, *words: str) -> bool:
        token = self.current
        return token.kind == "ident" and token.text.lower() in words

    def fail(self, expecting: str) -> QueryParseError:
        token = self.current
        shown = "<EOF>" if token.kind == "eof" else token.text
        return QueryParseError(
            f'Encountered " {shown} " at line 1, column {token.column}.\n'
            f"Was expecting one of: {expecting}"
        )

    def expect_keyword(self, word: str) -> None:
        if not self.is_keyword(word):
            raise self.fail(f'"{word.upper()}"')
        self.advance()

    def expect_punct(self, char: str) -> None:
        if self.current.kind != "punct" or self.current.text != char:
            raise self.fail(f'"{char}"')
        self.advance()

    def expect_ident(self, what: str) -> str:
        if self.current.kind != "ident":
            raise self.fail(what)
        return self.advance().text

    def expect_integer(self, keyword: str) -> int:
        token = self.current
        value = token.value
        if token.kind == "string" and isinstance(value, str) and value.strip().isdigit():
            self.advance()
            return int(value)
        if token.kind == "number" and isinstance(value, int):
            self.advance()
            return value
        raise self.fail(f"<INTEGER> after {keyword}")

    # -- grammar -------------------------------------------------------
    def parse(self) -> Query:
        self.expect_keyword("select")
        count = False
        fields: tuple[str, ...] | None = None
        if self.current.kind == "punct" and self.current.text == "*":
            self.advance()
        elif self.is_keyword("count") and self._peek_is_punct("("):
            self.advance()
            self.expect_punct("(")
            self.expect_punct("*")
            self.expect_punct(")")
            count = True
        else:
            names = [self.expect_ident('"*" or a property name')]
            while self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                names.append(self.expect_ident("a property name"))
            fields = tuple(names)
        self.expect_keyword("from")
        entity_name = self.expect_ident("<ENTITY NAME>")
        entity = KNOWN_ENTITIES.get(entity_name.lower())
        if entity is None:
            raise QueryValidationError(f"Entity {entity_name} is not supported")
        where: list[Condition] = []
        if self.is_keyword("where"):
            self.advance()
            where.append(self.parse_condition())
            while self.is_keyword("and"):
                self.advance()
                where.append(self.parse_condition())
        order_by: list[OrderBy] = []
        start: int | None = None
        max_results: int | None = None
        while self.current.kind != "eof":
            if self.is_keyword("orderby", "order") and not order_by:
                if self.advance().text.lower() == "order":
                    self.expect_keyword("by")
                order_by.append(self.parse_order_item())
                while self.current.kind == "punct" and self.current.text == ",":
                    self.advance()
                    order_by.append(self.parse_order_item())
            elif self.is_keyword("startposition") and start is None:
                self.advance()
                start = self.expect_integer("STARTPOSITION")
            elif self.is_keyword("maxresults") and max_results is None:
                self.advance()
                max_results = self.expect_integer("MAXRESULTS")
            else:
                raise self.fail('"AND" "ORDERBY" "STARTPOSITION" "MAXRESULTS" <EOF>')
        if start is not None and start < 1:
            raise QueryValidationError("STARTPOSITION must be 1 or greater")
        if max_results is not None and not 1 <= max_results <= MAX_RESULTS_LIMIT:
            raise QueryValidationError(
                f"MAXRESULTS must be between 1 and {MAX_RESULTS_LIMIT}, was {max_results}"
            )
        return Query(
            entity=entity,
            count=count,
            fields=fields,
            where=tuple(where),
            order_by=tuple(order_by),
            start_position=start or 1,
            max_results=max_results or DEFAULT_MAX_RESULTS,
        )

    def _peek_is_punct(self, char: str) -> bool:
        nxt = self.tokens[self.index + 1] if self.index + 1 < len(self.tokens) else None
        return nxt is not None and nxt.kind == "punct" and nxt.text == char

    def parse_order_item(self) -> OrderBy:
        name = self.expect_ident("a property name after ORDERBY")
        descending = False
        if self.is_keyword("asc", "desc"):
            descending = self.advance().text.lower() == "desc"
        return OrderBy(name, descending)

    def parse_condition(self) -> Condition:
        if self.is_keyword("or", "not"):
            raise self.fail("a property name")
        name = self.expect_ident("a property name")
        token = self.current
        if token.kind == "op":
            if token.text not in COMPARISON_OPS:
                raise self.fail('"=" "<" ">" "<=" ">=" "IN" "LIKE"')
            self.advance()
            return Condition(name, token.text, (self.parse_literal(),))
        if self.is_keyword("in"):
            self.advance()
            self.expect_punct("(")
            values = [self.parse_literal()]
            while self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                values.append(self.parse_literal())
            self.expect_punct(")")
            return Condition(name, "IN", tuple(values))
        if self.is_keyword("like"):
            self.advance()
            if self.current.kind != "string":
                raise self.fail("<STRING LITERAL> after LIKE")
            return Condition(name, "LIKE", (self.advance().value,))
        raise self.fail('"=" "<" ">" "<=" ">=" "IN" "LIKE"')

    def parse_literal(self) -> Literal:
        token = self.current
        if token.kind in {"string", "number"}:
            self.advance()
            return token.value
        if self.is_keyword("true", "false"):
            self.advance()
            return token.text.lower() == "true"
        raise self.fail("<STRING LITERAL> <NUMBER> true false")


def parse_query(text: str) -> Query:
    """Parse a QBO query; raises ``QueryParseError`` or ``QueryValidationError``."""
    if not text or not text.strip():
        raise QueryParseError('Encountered " <EOF> " at line 1, column 1.')
    return _Parser(text).parse()


def like_to_regex(pattern: str) -> re.Pattern[str]:
    """``%`` matches any run of characters; matching ignores case like QBO."""
    parts = (re.escape(chunk) for chunk in pattern.split("%"))
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE | re.DOTALL)
