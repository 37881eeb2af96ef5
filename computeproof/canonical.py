"""RFC 8785 (JCS) canonical JSON, standard library only and without the json module.

The hook path imports this, so it avoids json (which pulls in re and enum). Only the
subset the project uses is accepted: str, int (within +-2**53-1, the I-JSON range),
bool, None, list/tuple and dict with str keys. Floats are refused: metrics are integers
in base units, so a float is always a bug upstream.
"""

from computeproof.errors import CanonicalError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import TypeAlias

    _Encode: TypeAlias = Callable[[object, int], Iterable[str]]
    _Scan: TypeAlias = Callable[[str, int], tuple[object, int]]

MAX_SAFE_INTEGER = 2**53 - 1

_ESCAPES: dict[int, str] = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
_ESCAPES.update({0x22: '\\"', 0x5C: "\\\\"})


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _encode(value: object, out: list[str], append: "Callable[[str], None]") -> None:
    if isinstance(value, str):
        append('"' + value.translate(_ESCAPES) + '"')
    elif value is None:
        append("null")
    elif value is True:
        append("true")
    elif value is False:
        append("false")
    elif isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            append(int.__repr__(value))  # decimal, as json's C encoder writes any int
        else:
            raise CanonicalError(f"integer {value} is outside the I-JSON range +-(2**53-1)")
    elif isinstance(value, dict):
        append("{")
        first = True
        try:
            # ASCII keys sort the same by code point as by UTF-16 unit, without loading
            # the utf-16 codec (0.15 ms of a hook's start)
            ascii_keys = all(isinstance(k, str) and k.isascii() for k in value)
            keys = sorted(value) if ascii_keys else sorted(value, key=_utf16_key)
        except (AttributeError, TypeError) as e:
            raise CanonicalError(f"object keys must be strings: {list(value)!r}") from e
        for key in keys:
            if not first:
                append(",")
            first = False
            append('"' + key.translate(_ESCAPES) + '":')
            _encode(value[key], out, append)
        append("}")
    elif isinstance(value, list | tuple):
        append("[")
        for i, item in enumerate(value):
            if i:
                append(",")
            _encode(item, out, append)
        append("]")
    elif isinstance(value, float):
        raise CanonicalError(
            f"float {value!r} found: canonical events carry integers in base units"
        )
    else:
        raise CanonicalError(f"type {type(value).__name__} cannot be written as canonical JSON")


def canonical_str(value: object) -> str:
    """Return the RFC 8785 canonical JSON text of ``value``."""
    out: list[str] = []
    _encode(value, out, out.append)
    return "".join(out)


def canonical_bytes(value: object) -> bytes:
    """Return the RFC 8785 canonical JSON of ``value`` as UTF-8 bytes."""
    try:
        return canonical_str(value).encode("utf-8")
    except UnicodeEncodeError as e:
        raise CanonicalError(f"string is not valid Unicode (lone surrogate?): {e}") from e


def _refuse(value: object) -> object:
    raise TypeError(f"type {type(value).__name__} is not JSON")


def _bounded_int(digits: str) -> int:
    value = int(digits)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise ValueError("integer outside the I-JSON range")
    return value


def _no_float(text: str) -> object:
    raise ValueError(f"float {text} found")


_FAST: "tuple[_Encode, _Scan] | None" = None


def canonical_bytes_fast(value: object) -> bytes:
    """:func:`canonical_bytes` through json's C encoder, for long-lived processes that
    write many events (the collector's spool batches): under half the CPU.

    The C text is returned only where it is provably the reference's: read back with the
    C scanner (no float, no integer out of range), it equals ``value`` (so no key was
    converted from another type, no tuple became a list unseen) and it holds no character
    at or above U+E000, where code point order (json's key sort) and UTF-16 order (RFC
    8785's) part. json's string escapes are the reference's (a unit test compares every
    code point). Anything else is encoded by the reference, which also raises its errors.
    """
    global _FAST
    if _FAST is None:
        import _json

        encoder = _json.make_encoder(
            None, _refuse, _json.encode_basestring, None, ":", ",", True, False, False
        )
        _FAST = encoder, _json.make_scanner(_ProofContext)  # type: ignore[arg-type]
    encode, scan = _FAST
    try:
        text = "".join(encode(value, 0))
        back, end = scan(text, 0)
    except (TypeError, ValueError, StopIteration, RecursionError):
        return canonical_bytes(value)
    if end != len(text) or back != value or not (text.isascii() or max(text) < "\ue000"):
        return canonical_bytes(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the reference says so
        return canonical_bytes(value)


class _ScanContext:
    """What ``_json.make_scanner`` reads from json.JSONDecoder: the defaults, no NaN."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float: "Callable[[str], object]" = float
    parse_int: "Callable[[str], int]" = int

    @staticmethod
    def parse_constant(name: str) -> object:
        raise ValueError(f"{name} is not a JSON value")


class _ProofContext(_ScanContext):
    """The C scanner's settings for reading back the fast encoder's text: a float or an
    integer outside +-(2**53-1) ends the read too."""

    parse_float = staticmethod(_no_float)
    parse_int = staticmethod(_bounded_int)


_JSON_SPACE = " \t\n\r"


def loads(data: bytes) -> object:
    """Parse one JSON text as json.loads does, with the json module's C scanner alone.

    ``import json`` costs a hook about 8 ms of CPU (it imports re and enum); ``_json``
    under 1 ms. Raises ValueError (UnicodeDecodeError, json.JSONDecodeError) for anything
    json.loads would refuse, and for NaN and Infinity.
    """
    try:
        import _json
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        import json

        return json.loads(data, parse_constant=_ScanContext.parse_constant)
    text = data.decode("utf-8")
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    try:
        value, end = _json.make_scanner(_ScanContext)(text, start)  # type: ignore[arg-type]
    except StopIteration as e:
        raise ValueError(f"no JSON value at character {e.value}") from None
    if text[end:].strip(_JSON_SPACE):
        raise ValueError(f"text after the JSON value at character {end}")
    return value
