"""Reading JSON input files safely: explicit encoding, a nesting limit, one-line errors.

Python's ``json`` would take a UTF-16 file for a decode error deep inside, raise ``RecursionError``
on deeply nested arrays, and ``ValueError`` on integers of more than 4300 digits. Here each of those
is an error of the caller's type naming the file and the problem. NaN and Infinity literals are
parsed (Python's default); the field checks refuse them wherever a number must be finite.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MAX_JSON_DEPTH = 100  # COCO-style files nest about 6 deep; anything near this is not annotation data
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPENERS, _CLOSERS = (ord("["), ord("{")), (ord("]"), ord("}"))
_STRUCTURAL = np.zeros(256, dtype=bool)
_STRUCTURAL[[_QUOTE, *_OPENERS, *_CLOSERS]] = True
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[list(_OPENERS)], _DEPTH_STEP[list(_CLOSERS)] = 1, -1


def read_json_file(path: Path, error_type: type, kind: str = "file") -> Any:
    """Parsed JSON of the UTF-8 file ``path``; problems raise ``error_type`` naming it (``kind`` says
    what the file is, e.g. "annotation file")."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error_type(f"cannot read {kind} {path}: {exc.strerror or exc}") from exc
    try:
        text = decode_json_bytes(raw)
    except ValueError as exc:
        raise error_type(f"{path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error_type(f"{path}: malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") \
            from exc
    except ValueError as exc:  # e.g. an integer of more than sys.get_int_max_str_digits() digits
        raise error_type(f"{path}: malformed JSON: {str(exc).splitlines()[0]}") from exc
    except RecursionError as exc:  # unreachable after the depth check; kept so no traceback can escape
        raise error_type(f"{path}: JSON nested too deeply") from exc


def decode_json_bytes(raw: bytes) -> str:
    """The text of a UTF-8 JSON document (a UTF-8 byte-order mark is allowed), checked for nesting depth.

    Raises ValueError with a one-line reason for UTF-16/UTF-32 or other non-UTF-8 bytes and for
    nesting deeper than ``MAX_JSON_DEPTH``.
    """
    if raw.startswith(_UTF8_BOM):
        raw = raw[len(_UTF8_BOM):]
    elif raw.startswith(_UTF16_32_BOMS):
        raise ValueError("the file is UTF-16 or UTF-32 encoded (byte-order mark); save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise ValueError(f"NUL byte at offset {nul}: not UTF-8 JSON (UTF-16 or UTF-32 without a "
                         f"byte-order mark, or a binary file?); save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                         f"({exc.reason}); save the file as UTF-8") from None
    depth, offset = max_nesting(raw)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep (at byte offset {offset})")
    return text


def max_nesting(raw: bytes) -> tuple[int, int]:
    """``(depth, offset)``: the deepest array/object nesting of a JSON text and where it first exceeds
    ``MAX_JSON_DEPTH`` (else where it is reached). Exact for valid JSON; brackets inside strings
    (quotes escaped by an odd number of backslashes taken into account) do not count."""
    codes = np.frombuffer(raw, dtype=np.uint8)
    positions = np.flatnonzero(_STRUCTURAL[codes])
    if len(positions) == 0:
        return 0, 0
    kinds = codes[positions]
    quote_at = np.flatnonzero(kinds == _QUOTE)
    quotes = positions[quote_at]
    maybe = np.flatnonzero(codes[np.maximum(quotes - 1, 0)] == _BACKSLASH)
    if len(maybe):  # rare: a quote escaped by an odd number of backslashes does not end a string
        quote_at = np.delete(quote_at, maybe[_odd_backslash_runs(codes, quotes[maybe])])
    toggles = np.zeros(len(positions), dtype=np.int8)
    toggles[quote_at] = 1
    # a bracket is inside a string when an odd number of (unescaped) quotes comes before it
    inside = (np.cumsum(toggles, dtype=np.int32) & 1).astype(bool)
    step = _DEPTH_STEP[kinds]
    step[inside] = 0
    depth = np.cumsum(step, dtype=np.int32)
    deepest = int(depth.max())
    at = int(np.argmax(depth > MAX_JSON_DEPTH)) if deepest > MAX_JSON_DEPTH else int(np.argmax(depth))
    return deepest, int(positions[at])


def _odd_backslash_runs(codes: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """For each quote position, whether an odd number of backslashes directly precedes it."""
    backslashes = np.flatnonzero(codes == _BACKSLASH)
    breaks = np.flatnonzero(np.diff(backslashes) != 1) + 1
    run_starts = np.r_[backslashes[:1], backslashes[breaks]]
    run_ends = np.r_[backslashes[breaks - 1], backslashes[-1:]]  # inclusive
    run = np.searchsorted(run_ends, quotes - 1)  # the run ending right before each quote
    return (run_ends[run] - run_starts[run] + 1) % 2 == 1
