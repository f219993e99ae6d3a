from __future__ import annotations

from screenlake.identifiers import DUTCH_PHONE, DUTCH_POSTCODE, NINE_DIGITS, is_valid_bsn


def test_bsn_eleven_test() -> None:
    assert is_valid_bsn("111222333")
    assert not is_valid_bsn("111222334")
    assert not is_valid_bsn("11122233a")
    assert not is_valid_bsn("000000000")
    assert is_valid_bsn("11122233") == is_valid_bsn("011122233")


def test_patterns_stand_alone() -> None:
    assert NINE_DIGITS.findall("bsn 111222333.") == ["111222333"]
    assert NINE_DIGITS.findall("SL0111222333F") == []
    assert DUTCH_PHONE.search("bel 06-12345678")
    assert DUTCH_PHONE.search("+31612345678")
    assert not DUTCH_PHONE.search("A0612345678B")
    assert DUTCH_POSTCODE.search("Kerkstraat 1, 3511 AB Utrecht")
    assert not DUTCH_POSTCODE.search("3511 SS Utrecht")  # SA, SD and SS are never issued
