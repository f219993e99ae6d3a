"""The streaming multipart splitter (`screenlake.pacs.multipart`)."""

from __future__ import annotations

import pytest

from screenlake.pacs.multipart import (
    MultipartError,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
    split_parts,
)


def _body(parts: list[bytes], boundary: bytes = b"b0undary", preamble: bytes = b"") -> bytes:
    out = preamble
    for part in parts:
        out += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def _collect(chunks: list[bytes], boundary: bytes = b"b0undary") -> list[bytes]:
    parts: list[bytes] = []
    current: bytearray | None = None
    for event in split_parts(chunks, boundary):
        if isinstance(event, PartStart):
            assert event.headers["content-type"] == "application/dicom"
            current = bytearray()
        elif isinstance(event, PartData):
            assert current is not None
            current.extend(event.data)
        else:
            assert isinstance(event, PartEnd) and current is not None
            parts.append(bytes(current))
            current = None
    return parts


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_parts_come_back_whole_whatever_the_chunk_size(size: int) -> None:
    payloads = [b"DICM" + bytes(range(256)) * 3, b"", b"\r\n--b0undar", b"x" * 5000]
    body = _body(payloads, preamble=b"ignored\r\n")
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    assert _collect(chunks) == payloads


def test_a_body_cut_short_is_an_error() -> None:
    body = _body([b"a" * 100, b"b" * 100])
    with pytest.raises(MultipartError):
        _collect([body[:150]])
    with pytest.raises(MultipartError):
        _collect([])


def test_the_boundary_is_read_from_the_content_type() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a;b"') == b"a;b"
    assert boundary_of("multipart/related;boundary=xyz;type=application/dicom") == b"xyz"
    with pytest.raises(MultipartError):
        boundary_of("application/dicom+json")
    with pytest.raises(MultipartError):
        boundary_of("multipart/related; type=application/dicom")
