"""Schemathesis extensions for scripts/schemathesis.sh (loaded with SCHEMATHESIS_HOOKS).

Three rules of the API are stated in docs/openapi.json but cannot be written as JSON Schema, so
Schemathesis is taught them here instead of being told to ignore what the agent answers:

- `format: barcode`: a GTIN whose check digit holds, a GS1 element string or a GS1 Digital Link
  carrying one. A mod-10 check digit is no regular expression anyone could read, so the format
  gets a generator of its own.
- `format: coupon`: a GS1 coupon whose variable-length fields hold together, or a plain code.
- The idempotency key may travel in the body (`client_key`) and in the `Idempotency-Key` header
  only if both are equal, and one of them is required on every write but `POST /v1/movements`:
  OpenAPI cannot tie a header to a body field. A key is also unique to one fact: a generated
  key reused for another request is rightly refused (422 `idempotency_key_reused`), so each
  case's key gets a suffix that makes it its own.

Only cases generated to be accepted are changed; Schemathesis revalidates a case a hook
changed, so it is judged as what it has become.
"""

import itertools
import re

import schemathesis
from hypothesis import strategies as st


def _check_digit(body: str) -> str:
    """The GS1 mod-10 check digit of `body` (weights 3, 1, 3, … from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return str((10 - total % 10) % 10)


def _gtin(length: int):
    return st.text("0123456789", min_size=length - 1, max_size=length - 1).map(
        lambda body: body + _check_digit(body)
    )


_GTIN = st.one_of(_gtin(8), _gtin(12), _gtin(13), _gtin(14))
_GTIN14 = _gtin(14)

schemathesis.openapi.format(
    "barcode",
    st.one_of(
        _GTIN,
        _GTIN14.map(lambda g: f"(01){g}"),
        _GTIN14.map(lambda g: f"]C101{g}"),
        _GTIN14.map(lambda g: f"https://id.gs1.org/01/{g}"),
    ),
)

# `format: coupon`: a GS1 coupon (AI 8110 with its variable-length fields, or 8112) in the forms
# a till sends, or a plain code. The coupon rules are no regular expression either.
_SERIAL = st.text("0123456789", min_size=6, max_size=6)
_COUPON_8110 = _SERIAL.map(lambda s: f"061414100012325011000050{s}")
_COUPON_8112 = _SERIAL.map(lambda s: f"106141410001230{s}")
schemathesis.openapi.format(
    "coupon",
    st.one_of(
        st.from_regex(r"\A[A-Za-z0-9-]{4,32}\Z"),
        _COUPON_8110.map(lambda d: f"(8110){d}"),
        _COUPON_8110.map(lambda d: f"]C18110{d}"),
        _COUPON_8110.map(lambda d: f"8110{d}"),
        _COUPON_8112.map(lambda d: f"(8112){d}"),
    ),
)

# Writes whose key is required (in the body or the header).
_KEYED = {
    ("POST", "/v1/sales"),
    ("POST", "/v1/returns"),
    ("POST", "/v1/cycle-counts"),
    ("POST", "/v1/loyalty/earn"),
    ("POST", "/v1/loyalty/burn"),
    ("POST", "/v1/pickups/{code}/collect"),
    ("POST", "/v1/customers/{customer_id}/consent"),
    ("POST", "/v1/coupons/redeem"),
}
_ALL_KEYED = _KEYED | {("POST", "/v1/movements")}
_HEADER = "Idempotency-Key"
_HEADER_VALUE = re.compile(r"[!-~](?:[ -~]*[!-~])?")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,128}")
_serial = itertools.count(1)


def _unique(key: str) -> str:
    """`key` made unique to this case, still 1 to 128 printable characters."""
    suffix = f"~{next(_serial):x}"
    return key[: 128 - len(suffix)] + suffix


@schemathesis.hook
def before_call(context, case, kwargs):
    # Every network call, whatever the phase; the case's containers are replaced, not edited in
    # place, since generated cases share them.
    route = (case.operation.method.upper(), case.operation.path)
    if route not in _ALL_KEYED:
        return
    # Only cases meant to be accepted: a negative case is refused whatever its key, and editing
    # its headers would undo what it leaves out (Schemathesis sends a header it thinks is back).
    if case.meta is None or case.meta.generation.mode.is_negative:
        return
    # Header names are case-insensitive; a generated one may be spelled either way.
    headers = {
        (_HEADER if name.lower() == _HEADER.lower() else name): value
        for name, value in dict(case.headers or {}).items()
    }
    header = headers.get(_HEADER)
    body = dict(case.body) if isinstance(case.body, dict) else None
    body_key = body.get("client_key") if body is not None else None
    valid_header = isinstance(header, str) and _HEADER_VALUE.fullmatch(header) is not None
    valid_body_key = isinstance(body_key, str) and _PRINTABLE.fullmatch(body_key) is not None
    if valid_body_key:
        key = _unique(body_key)
        body["client_key"] = key
        case.body = body
        if valid_header:
            # Equal, or gone when the body's key cannot be a header value (non-ASCII).
            if _HEADER_VALUE.fullmatch(key):
                headers[_HEADER] = key
            else:
                del headers[_HEADER]
            case.headers = headers
    elif valid_header and body_key is None:
        headers[_HEADER] = _unique(header)
        case.headers = headers
    elif header is None and body_key is None and route in _KEYED:
        headers[_HEADER] = _unique("schemathesis")
        case.headers = headers
