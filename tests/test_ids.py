"""Resource ids: the UUIDv7 layout of RFC 9562 §5.7, checked against its Appendix A.6 example."""

from __future__ import annotations

import uuid

import pytest

from scimd.ids import new_id, uuid7

CASES = [
    # (Unix milliseconds, 10 random bytes, id)
    # RFC 9562 Appendix A.6: 2022-02-22 19:22:22 UTC, rand_a 0xCC3, rand_b 0x18C4DC0C0C07398F.
    (0x017F22E279B0, bytes.fromhex("7CC318C4DC0C0C07398F"), "017f22e2-79b0-7cc3-98c4-dc0c0c07398f"),
    # the version and the variant replace 6 random bits, whatever they were
    (0x0123456789AB, bytes(10), "01234567-89ab-7000-8000-000000000000"),
    (0x0123456789AB, b"\xff" * 10, "01234567-89ab-7fff-bfff-ffffffffffff"),
    # a timestamp past 48 bits (the year 10889) wraps instead of spilling into the version
    (0x1_0000_0000_0001, bytes(10), "00000000-0001-7000-8000-000000000000"),
]


@pytest.mark.parametrize(("millis", "random_bits", "expected"), CASES)
def test_uuid7_layout(millis: int, random_bits: bytes, expected: str) -> None:
    assert uuid7(millis, random_bits) == expected
    parsed = uuid.UUID(expected)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)


def test_new_ids_differ_and_are_version_7() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert {uuid.UUID(rid).version for rid in ids} == {7}
