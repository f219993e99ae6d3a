"""A streaming splitter for multipart/related bodies (WADO-RS answers), one chunk at a time.

Never holds more than a chunk and a boundary's length of the body, so a whole series can be
split into files without keeping it in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass


class MultipartError(ValueError):
    """The body is not the multipart message its headers announced, or was cut short."""


@dataclass(frozen=True)
class PartStart:
    """A part begins; its headers, names lower-cased."""

    headers: dict[str, str]


@dataclass(frozen=True)
class PartData:
    """Some of the current part's body, in order."""

    data: bytes


@dataclass(frozen=True)
class PartEnd:
    """The current part's body is complete."""


Event = PartStart | PartData | PartEnd


def boundary_of(content_type: str) -> bytes:
    """The boundary parameter of a multipart Content-Type header."""
    kind, _, parameters = content_type.partition(";")
    if not kind.strip().lower().startswith("multipart/"):
        raise MultipartError(f"expected a multipart body, got {kind.strip() or 'no type'}")
    for parameter in _split_parameters(parameters):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value:
                return value.encode("ascii")
    raise MultipartError("the multipart body's Content-Type names no boundary")


def _split_parameters(text: str) -> list[str]:
    """Split on semicolons outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def split_parts(chunks: Iterable[bytes], boundary: bytes) -> Iterator[Event]:
    """Events for each part of the multipart body arriving as `chunks`: PartStart, PartData
    (zero or more), PartEnd. Raises MultipartError when the body ends before its closing
    delimiter."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) + 2  # a delimiter and the two bytes after it that say what follows
    buffer = bytearray(b"\r\n")  # the first delimiter may open the body without a line break
    state = "preamble"
    source = iter(chunks)
    exhausted = False

    def fill() -> bool:
        nonlocal exhausted
        for chunk in source:
            if chunk:
                buffer.extend(chunk)
                return True
        exhausted = True
        return False

    while True:
        if state == "preamble":
            at = buffer.find(delimiter)
            if at < 0:
                del buffer[: max(0, len(buffer) - len(delimiter))]
                if not fill():
                    raise MultipartError("the multipart body holds no delimiter")
                continue
            del buffer[: at + len(delimiter)]
            state = "after-delimiter"
        elif state == "after-delimiter":
            if len(buffer) < 2 and fill():
                continue
            if buffer[:2] == b"--":
                return
            end = buffer.find(b"\r\n")
            if end < 0:
                if not fill():
                    raise MultipartError("the multipart body ends inside a delimiter line")
                continue
            del buffer[: end + 2]  # transport padding and the line break
            state = "headers"
        elif state == "headers":
            if buffer[:2] == b"\r\n":  # a part without headers
                del buffer[:2]
                yield PartStart({})
                state = "body"
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if not fill():
                    raise MultipartError("the multipart body ends inside a part's headers")
                continue
            headers: dict[str, str] = {}
            for line in bytes(buffer[:end]).decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip():
                    headers[name.strip().lower()] = value.strip()
            del buffer[: end + 4]
            yield PartStart(headers)
            state = "body"
        else:  # body
            at = buffer.find(delimiter)
            if at >= 0:
                if at:
                    yield PartData(bytes(buffer[:at]))
                del buffer[: at + len(delimiter)]
                yield PartEnd()
                state = "after-delimiter"
                continue
            safe = len(buffer) - keep
            if safe > 0:
                yield PartData(bytes(buffer[:safe]))
                del buffer[:safe]
            if not fill():
                raise MultipartError("the multipart body was cut short inside a part")
