"""Sticky bucketing, bit-for-bit compatible with Unleash's flexibleRollout and variant selection.

A context lands in bucket `murmur3_x86_32("<group_id>:<stickiness value>", seed) % modulus + 1`
(unsigned hash). Rollouts use seed 0 and modulus 100 and include buckets `<= percent`; variant
splits use seed 86028157 and the total weight as the modulus, then walk the cumulative weights.
"""

from __future__ import annotations

from mmh3 import hash as _mmh3_hash

ROLLOUT_SEED = 0
VARIANT_SEED = 86028157


def hash_text(text: str, seed: int) -> int:
    """MurmurHash3 x86 32-bit of the UTF-8 bytes of `text`, as an unsigned integer.

    Only ASCII strings are handed to mmh3 as `str`: mmh3 5.3 crashes the interpreter (SIGSEGV) on a
    string holding a lone surrogate, which a JSON request can carry ("\\ud800"). Other strings are
    encoded here (lone surrogates with `surrogatepass`), which gives the same bytes mmh3 would hash.
    """
    if text.isascii():
        return _mmh3_hash(text, seed, False)
    return _mmh3_hash(text.encode("utf-8", "surrogatepass"), seed, False)


def murmur3_32(text: str, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit of the UTF-8 bytes of `text`, as an unsigned integer."""
    return hash_text(text, seed)


def bucket(group_id: str, value: str, modulus: int = 100, seed: int = ROLLOUT_SEED) -> int:
    """The 1-based bucket (1..modulus) of a stickiness value, as Unleash's `normalized_hash`."""
    return hash_text(f"{group_id}:{value}", seed) % modulus + 1


def in_rollout(group_id: str, value: str, percent: int) -> bool:
    """Whether a stickiness value falls inside a `percent` % rollout of `group_id`."""
    return bucket(group_id, value) <= percent
