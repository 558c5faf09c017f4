"""Instruction receipt: what the inference node refuses before it reaches the trigger, and the
de-duplication of one instruction arriving over two subscriptions.

The instruction topic has a transient-local subscription (a late-starting node still gets the
last instruction from a latched publisher) and a volatile one (a transient-local subscription
never matches a plain volatile publisher). A latched publisher reaches both, so each of its
messages arrives twice; `ReceiptDeduper` drops the second copy without ever dropping a message
that only one subscription saw.
"""

from __future__ import annotations

import struct
import unicodedata
from collections import deque
from collections.abc import Callable

MAX_INSTRUCTION_CHARS = 4096
"""Fallback bound for policies that cannot say how long an instruction may be."""

DUPLICATE_WINDOW_S = 0.25
"""A copy over the other subscription arrives within this time of the first, or not at all."""


def instruction_problem(text: str, max_chars: int = MAX_INSTRUCTION_CHARS) -> str | None:
    """Why `text` is refused as an instruction, or None. Blank text is fine (it clears)."""
    stripped = text.strip()
    for index, char in enumerate(stripped):
        if unicodedata.category(char) == "Cc":
            name = "NUL" if char == "\0" else f"control character U+{ord(char):04X}"
            return f"contains a {name} at position {index}"
    if len(stripped) > max_chars:
        return f"is {len(stripped)} characters long; at most {max_chars} are accepted"
    return None


def cdr_string(data: bytes) -> str:
    """The text of a serialized std_msgs/String (plain CDR), NULs included.

    rclpy turns the string into Python text at its first NUL, so `'go\\x00 left'` arrived as
    `'go'` and was followed; read from the raw bytes, the NUL reaches `instruction_problem`.
    Raises ValueError for bytes that are not a CDR string (an unknown encapsulation included).
    """
    if len(data) < 8 or data[0] != 0 or data[1] not in (0, 1):
        raise ValueError("not a plain-CDR std_msgs/String")
    (length,) = struct.unpack_from("<I" if data[1] == 1 else ">I", data, 4)
    body = data[8 : 8 + length]
    if length == 0 or len(body) != length or body[-1] != 0:
        raise ValueError(f"truncated std_msgs/String ({len(data)} bytes, length {length})")
    return body[:-1].decode("utf-8")


def published_before(source_timestamp_ns: int, listening_since_ns: int, latched: bool) -> bool:
    """Whether the transient-local subscription delivered a message from a publisher's history,
    sent before this node started listening: after a restart that is the instruction the
    crashed node was following, and nobody has asked for it again. The source timestamp is the
    publisher's clock (0 when the middleware does not say), so hosts must agree on time."""
    return latched and 0 < source_timestamp_ns < listening_since_ns


class ReceiptDeduper:
    """Pairs copies of one message delivered by two subscriptions (`source` 0 and 1).

    A message is a duplicate when the other subscription delivered the same text within
    `window_s` and that delivery is not paired yet; pairing consumes it, so A, B, A sent by a
    latched publisher is A, B, A, never A, B, A, B.
    """

    def __init__(self, clock: Callable[[], float], window_s: float = DUPLICATE_WINDOW_S) -> None:
        self._clock = clock
        self._window_s = window_s
        self._unpaired: tuple[deque[tuple[float, str]], deque[tuple[float, str]]] = (
            deque(),
            deque(),
        )

    def is_duplicate(self, source: int, text: str) -> bool:
        now = self._clock()
        for queue in self._unpaired:
            while queue and (now - queue[0][0] > self._window_s or now < queue[0][0]):
                queue.popleft()
        other = self._unpaired[1 - source]
        for index, (_, seen) in enumerate(other):
            if seen == text:
                del other[index]
                return True
        self._unpaired[source].append((now, text))
        return False
