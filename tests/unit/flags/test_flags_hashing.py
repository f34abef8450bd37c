"""Sticky bucketing: mmh3 against a pure-Python MurmurHash3, and Unleash's known vectors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shipyard.flags import ROLLOUT_SEED, VARIANT_SEED, bucket, in_rollout, murmur3_32

MASK = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & MASK


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    return h ^ (h >> 16)


def reference_murmur3_32(data: bytes, seed: int) -> int:
    """MurmurHash3_x86_32, transcribed from Austin Appleby's MurmurHash3.cpp."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & MASK
    blocks = len(data) // 4
    for i in range(blocks):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = _rotl((k * c1) & MASK, 15)
        h ^= (k * c2) & MASK
        h = (_rotl(h, 13) * 5 + 0xE6546B64) & MASK
    tail = data[4 * blocks :]
    k = 0
    for i in reversed(range(len(tail))):
        k ^= tail[i] << (8 * i)
    if tail:
        h ^= (_rotl((k * c1) & MASK, 15) * c2) & MASK
    return _fmix(h ^ len(data))


def test_the_reference_itself_matches_published_vectors() -> None:
    # SMHasher's verification values for MurmurHash3_x86_32.
    assert reference_murmur3_32(b"", 0) == 0
    assert reference_murmur3_32(b"", 1) == 0x514E28B7
    assert reference_murmur3_32(b"", 0xFFFFFFFF) == 0x81F16F39
    assert reference_murmur3_32(b"\xff\xff\xff\xff", 0) == 0x76293B50
    assert reference_murmur3_32(b"!Ce\x87", 0) == 0xF55B516B
    assert reference_murmur3_32(b"Hello, world!", 1234) == 0xFAF6CDB3
    assert reference_murmur3_32(b"The quick brown fox jumps over the lazy dog", 0) == 0x2E4FF723


@given(st.text(), st.sampled_from([0, 1, ROLLOUT_SEED, VARIANT_SEED, 0xFFFFFFFF]))
def test_mmh3_equals_the_reference_on_any_string(text: str, seed: int) -> None:
    assert murmur3_32(text, seed) == reference_murmur3_32(text.encode("utf-8"), seed)


@given(st.text(st.characters(categories=["Cs", "Ll", "Nd"])))
def test_lone_surrogates_hash_as_their_utf8_bytes_and_do_not_crash(text: str) -> None:
    # mmh3 5.3 segfaults on such a str; murmur3_32 must not hand it one.
    assert murmur3_32(text) == reference_murmur3_32(text.encode("utf-8", "surrogatepass"), 0)


def test_unleash_vectors() -> None:
    assert bucket("gr1", "123") == 73
    assert bucket("groupX", "999") == 25
    assert in_rollout("gr1", "123", 73)
    assert not in_rollout("gr1", "123", 72)


@given(st.text(max_size=20), st.text(max_size=20), st.integers(1, 10_000))
def test_bucket_is_one_based_and_within_the_modulus(group: str, value: str, modulus: int) -> None:
    b = bucket(group, value, modulus)
    assert 1 <= b <= modulus
    assert b == reference_murmur3_32(f"{group}:{value}".encode(), 0) % modulus + 1
