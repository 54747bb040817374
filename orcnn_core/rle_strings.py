"""Decoding and checking compressed RLE counts strings exactly as pycocotools reads them, vectorised.

pycocotools' ``rleFrString`` (maskApi.c) trusts its input: it reads past the end of a string whose last
character says "more follows", shifts by undefined amounts for runs longer than 6 characters, and wraps
negative runs to huge unsigned ones, after which its merge and IoU loops may never end. This module
decodes the same format with numpy, for many strings at once, so that only strings pycocotools reads
exactly as intended, with runs adding up to height x width, ever reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from orcnn_core.mask_checks import MaskFormatError, canonical_counts

# 30 bits: more than any run of a MAX_MASK_PIXELS mask needs; beyond it pycocotools' shifts overflow
MAX_COUNT_CHARS = 6
_ALPHABET_FIRST, _ALPHABET_LAST = ord("0"), ord("o")  # pycocotools writes chars 48..111

# Per byte: in pycocotools' alphabet; a "more characters follow" character (0x20 set); its 5-bit digit,
# signed (two's complement) for a run's last character, which carries the sign in bit 0x10.
_IN_ALPHABET = np.zeros(256, dtype=bool)
_IN_ALPHABET[_ALPHABET_FIRST:_ALPHABET_LAST + 1] = True
_MORE = np.zeros(256, dtype=bool)
_MORE[_ALPHABET_FIRST + 0x20:_ALPHABET_LAST + 1] = True
_DIGIT = np.zeros(256, dtype=np.int8)
_DIGIT[_ALPHABET_FIRST:_ALPHABET_LAST + 1] = [c if c < 16 else c - 32 for c in range(64)]


@dataclass
class _DecodedStrings:
    """Runs of a batch of counts strings: ``errors`` by string index; runs of the others, concatenated."""

    errors: dict
    usable: list                 # indices of the strings that were decoded, in order
    runs: np.ndarray             # (R,) int64, every decoded string's runs one after the other
    first_run: np.ndarray        # (len(usable),) index in ``runs`` of each usable string's first run
    runs_per_string: np.ndarray  # (len(usable),)

    def runs_of(self, k: int) -> np.ndarray:
        """The runs of the ``k``-th usable string."""
        return self.runs[self.first_run[k]:self.first_run[k] + self.runs_per_string[k]]


def _decode_strings(strings: Sequence[str]) -> _DecodedStrings:
    """Decode compressed counts strings in one vectorised pass, as pycocotools' ``rleFrString`` would.

    Format: each run is LEB128-like, 5 bits per character offset by 48 ('0'), 0x20 meaning "more
    characters follow", the last character's 5 bits signed (two's complement); from the fourth run
    on, a run is stored as the difference to the run two before. Strings that pycocotools would read
    past their end, misread, or turn into negative (wrapped) runs get an error message instead.
    """
    errors: dict = {}
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    joined = "".join(strings)
    if lengths.min(initial=1) == 0 or not joined.isascii():
        for i, text in enumerate(strings):
            if not text:
                errors[i] = "counts: empty string (an RLE has at least one run)"
            elif not text.isascii():
                position = next(k for k, ch in enumerate(text) if ord(ch) > 127)
                errors[i] = f"counts: non-ASCII character {text[position]!r} at position {position}"
        usable = [i for i in range(len(strings)) if i not in errors]
        lengths = lengths[usable]
        joined = "".join(strings[i] for i in usable)
    else:
        usable = list(range(len(strings)))
    if not usable:
        empty = np.zeros(0, dtype=np.int64)
        return _DecodedStrings(errors, usable, empty, empty, empty)
    string_end = np.cumsum(lengths)
    string_start = string_end - lengths
    codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)

    def flag(positions: np.ndarray, owners: np.ndarray, message) -> None:
        # the first flagged position of each string gets the message (earlier checks win)
        strings_hit, first = np.unique(owners, return_index=True)
        for k, index in zip(strings_hit.tolist(), positions[first].tolist()):
            errors.setdefault(usable[k], message(k, index))

    def char_owners(positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(string_end, positions, side="right")

    if codes.min() < _ALPHABET_FIRST or codes.max() > _ALPHABET_LAST:
        outside = np.flatnonzero(~_IN_ALPHABET[codes])
        flag(outside, char_owners(outside),
             lambda k, p: f"counts: character {chr(codes[p])!r} at position {p - string_start[k]} is not "
                          f"in pycocotools' RLE alphabet ('0' to 'o')")
    last = string_end - 1
    if _MORE[codes[last]].any():
        cut = last[_MORE[codes[last]]]
        flag(cut, char_owners(cut), lambda k, p: "counts: the string ends inside a run (truncated)")
    final = ~_MORE[codes]
    final[last] = True  # so that no run spans two strings
    run_end = np.flatnonzero(final)
    first_run = np.searchsorted(run_end, string_start)
    runs_per_string = np.diff(first_run, append=len(run_end))

    def run_owners(indices: np.ndarray) -> np.ndarray:
        return np.searchsorted(first_run, indices, side="right") - 1

    def run_index(r: int) -> int:
        return int(r - first_run[run_owners(np.array([r]))[0]])

    # value of each run: 5 bits per character, least significant first, the last character's signed
    # (``_DIGIT``). Horner's rule from the last character back, one pass per character position
    # (most runs take one or two characters); a run still going on after MAX_COUNT_CHARS is refused.
    values = _DIGIT[codes[run_end]].astype(np.int32)
    # walking back stops at a final character: the end of the previous run or string (index -1 is
    # the last character, final too), so that no run reaches into another string
    going_on = np.flatnonzero(~final[run_end - 1])
    for k in range(1, MAX_COUNT_CHARS + 1):
        if len(going_on) == 0:
            break
        if k == MAX_COUNT_CHARS:
            flag(going_on, run_owners(going_on), lambda k, r: f"counts: run {run_index(r)} takes more than "
                                                              f"{MAX_COUNT_CHARS} characters (out of range)")
            break
        values[going_on] = (values[going_on] << 5) + _DIGIT[codes[run_end[going_on] - k]]
        going_on = going_on[~final[run_end[going_on] - k - 1]]

    # undo the delta coding: run j >= 3 is stored as run j minus run j - 2, so run j is the sum of the
    # stored values j, j - 2, ... down to 1 or 2 (run 0 is stored as it is). Per global parity p, the
    # runs at positions p, p + 2, ... are a cumulative sum minus its value before each string.
    chained = values.astype(np.int64)
    chained[first_run] = 0
    runs = np.empty_like(chained)
    string_stop = first_run + runs_per_string
    for parity in (0, 1):
        total = np.cumsum(chained[parity::2])
        start, stop = (first_run - parity + 1) // 2, (string_stop - parity + 1) // 2  # in chained[parity::2]
        before = np.where(start > 0, total[np.maximum(start - 1, 0)], 0) if len(total) else start * 0
        runs[parity::2] = total - np.repeat(before, stop - start)
    runs[first_run] = values[first_run]
    # pycocotools would wrap a negative run to a huge unsigned one; valid runs never wrap, so for the
    # strings accepted here its runs and these are the same
    if runs.min() < 0:
        negative = np.flatnonzero(runs < 0)
        flag(negative, run_owners(negative),
             lambda k, r: f"counts: run {run_index(r)} is negative ({runs[r]})")
    return _DecodedStrings(errors, usable, runs, first_run, runs_per_string)


def decode_counts_string(text: str) -> np.ndarray:
    """The runs of one compressed counts string (int64), as pycocotools decodes it; MaskFormatError
    when it is not a valid string (the runs' total is not checked here)."""
    decoded = _decode_strings([text])
    if decoded.errors:
        raise MaskFormatError(decoded.errors[0])
    return decoded.runs.copy()


def check_counts_strings(strings: Sequence[str],
                         pixels: Sequence[int]) -> list[Union[None, str, np.ndarray]]:
    """Decode many compressed RLE counts strings at once and check each against its pixel count.

    Per string the result is ``None`` (valid as it is), an error message, or the canonical runs
    (valid, but with empty runs to merge away before pycocotools' merge and IoU loops see them).
    """
    decoded = _decode_strings(strings)
    results: list = [decoded.errors.get(i) for i in range(len(strings))]
    if not decoded.usable:
        return results
    sums = np.add.reduceat(decoded.runs, decoded.first_run)
    empty_inner = decoded.runs == 0
    empty_inner[decoded.first_run] = False
    canonical_needed = set()
    if empty_inner.any():
        canonical_needed = set((np.searchsorted(decoded.first_run, np.flatnonzero(empty_inner), side="right")
                                - 1).tolist())
    for k, i in enumerate(decoded.usable):
        if results[i] is not None:
            continue
        if sums[k] != pixels[i]:
            results[i] = f"counts: runs add up to {sums[k]} pixels, not height x width = {pixels[i]}"
        elif k in canonical_needed:
            results[i] = canonical_counts(decoded.runs_of(k))
    return results
