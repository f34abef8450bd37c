"""The compiled evaluator: a FlagSet turned, once per version, into plain Python closures.

Compilation does all the work that does not depend on the context (parsing operands, building
sets, resolving segments and prerequisites, hashing prefixes) and precomputes every Evaluation a
flag can return, so evaluating allocates nothing: it reads the context dict, hashes at most once
per rollout or split, and returns one of the prebuilt results.

Evaluating never raises on a bad context: a missing attribute or a value of the wrong type makes a
condition false (`not_in` and `neq` true: they are "not in"), and anything unexpected becomes an
Evaluation with reason ERROR.

Every construct behaves as in Unleash's Node SDK (the client specification's tests run through it,
tests/unit/flags/test_unleash_spec.py): bucketing, default and random stickiness, variant overrides,
one-level prerequisites, inverted and case-insensitive conditions, IN_CIDR, and numbers, versions
and patterns read as Unleash reads them.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import ip_address
from typing import Any

from mmh3 import hash as _mmh3_hash  # ASCII only: see _hashing.hash_text

from ..spec.flag_values import (
    MAX_MATCH_INPUT,
    js_number,
    parse_datetime,
    parse_network,
    parse_number,
    python_regex,
    semver_key,
)
from ..spec.flags import (
    NO_VARIANT,
    Condition,
    Flag,
    FlagEnvironment,
    FlagSet,
    FlagType,
    Prerequisite,
    Rollout,
    Rule,
    Segment,
    Split,
)
from ._hashing import ROLLOUT_SEED, VARIANT_SEED, hash_text

Context = Mapping[str, Any]
Predicate = Callable[[Context], bool]


class Reason(StrEnum):
    """Why a value was served (OpenFeature's resolution reasons)."""

    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    """What went wrong when reason is ERROR (OpenFeature's error codes)."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    PARSE_ERROR = "PARSE_ERROR"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The outcome of evaluating one flag for one context. Values are shared: do not mutate them.

    Every non-error result is built once at compile time and returned as is, so evaluating
    allocates nothing.
    """

    value: Any
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None = None
    error_message: str | None = None
    payload: Any = None
    """The served variant's payload (`{"type": …, "value": …}`, Unleash's), or None."""


FlagFn = Callable[[Context], Evaluation]
RuleFn = Callable[[Context], Evaluation | None]

_NUMBER_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "lt": operator.lt, "lte": operator.le, "gt": operator.gt, "gte": operator.ge, "num_eq": operator.eq,
    "semver_lt": operator.lt, "semver_eq": operator.eq, "semver_gt": operator.gt,
    "semver_lte": operator.le, "semver_gte": operator.ge,
    "before": operator.lt, "after": operator.gt,
}  # fmt: skip

# Unleash's `default` stickiness: the first of these the context has (a split also tries remoteAddress).
_DEFAULT_ROLLOUT_IDS = ("userId", "sessionId")
_DEFAULT_SPLIT_IDS = ("userId", "sessionId", "remoteAddress")


# --- conditions ---------------------------------------------------------------------------------


def _membership(attr: str, missing: object, values: list[Any], negate: bool, fold: bool) -> Predicate:
    """`in` (or, negated, `not_in`): not_in is exactly "not in", so a missing value is not in."""
    strs = frozenset(v.lower() if fold else v for v in values if type(v) is str)
    bools = frozenset(v for v in values if type(v) is bool)
    nums = frozenset(v for v in values if type(v) in (int, float))
    if not bools and not nums and not fold:
        if negate:

            def not_in_strs(ctx: Context) -> bool:
                v = ctx.get(attr, missing)
                return v.__class__ is not str or v not in strs

            return not_in_strs
        if len(strs) == 1:
            (only,) = strs

            def eq_str(ctx: Context) -> bool:
                v = ctx.get(attr, missing)
                return v.__class__ is str and v == only

            return eq_str

        def in_strs(ctx: Context) -> bool:
            v = ctx.get(attr, missing)
            return v.__class__ is str and v in strs

        return in_strs

    def member(ctx: Context) -> bool:
        v = ctx.get(attr, missing)
        t = v.__class__
        if t is str:
            found = (v.lower() if fold else v) in strs
        elif t is bool:
            found = v in bools
        elif t is int or t is float:
            found = v in nums
        else:
            found = False
        return found is not negate

    return member


def _string_op(attr: str, missing: object, op: str, value: str | list[str], fold: bool) -> Predicate:
    subs = tuple(s.lower() if fold else s for s in ((value,) if isinstance(value, str) else value))
    if fold:
        test: Callable[[str], bool] = {
            "starts_with": lambda v: v.lower().startswith(subs),
            "ends_with": lambda v: v.lower().endswith(subs),
            "contains": lambda v: any(s in v.lower() for s in subs),
        }[op]

        def folded(ctx: Context) -> bool:
            v = ctx.get(attr, missing)
            return v.__class__ is str and test(v)

        return folded
    if op == "starts_with":

        def starts(ctx: Context) -> bool:
            v = ctx.get(attr, missing)
            return v.__class__ is str and v.startswith(subs)

        return starts
    if op == "ends_with":

        def ends(ctx: Context) -> bool:
            v = ctx.get(attr, missing)
            return v.__class__ is str and v.endswith(subs)

        return ends

    def contains(ctx: Context) -> bool:
        v = ctx.get(attr, missing)
        return v.__class__ is str and any(s in v for s in subs)

    return contains


def _compile_condition(cond: Condition, segments: Mapping[str, Predicate], environment: str) -> Predicate:
    test = _compile_test(cond, segments, environment)
    if not cond.inverted:
        return test

    def inverted(ctx: Context) -> bool:
        return not test(ctx)

    return inverted


def _compile_test(cond: Condition, segments: Mapping[str, Predicate], environment: str) -> Predicate:
    op, value, fold = cond.op, cond.value, cond.case_insensitive
    if op == "segment":
        return segments[str(value)]
    attr = str(cond.attribute)
    # The `environment` attribute defaults to the environment being evaluated.
    missing: object = environment if attr == "environment" else None
    if op in ("in", "not_in"):
        assert isinstance(value, list)
        return _membership(attr, missing, value, op == "not_in", fold)
    if op in ("eq", "neq"):
        return _membership(attr, missing, [value], op == "neq", fold)
    if op in ("contains", "starts_with", "ends_with"):
        return _string_op(attr, missing, op, value, fold)  # type: ignore[arg-type]
    if op == "matches":
        search = python_regex(str(value), ignore_case=fold).search

        def matches(ctx: Context) -> bool:
            v = ctx.get(attr, missing)
            return v.__class__ is str and len(v) <= MAX_MATCH_INPUT and search(v) is not None

        return matches
    if op == "in_cidr":
        assert isinstance(value, list)
        networks = tuple(n for n in map(parse_network, value) if n is not None)

        def in_cidr(ctx: Context) -> bool:
            v = ctx.get(attr, missing)
            if v.__class__ is not str:
                return False
            try:
                address = ip_address(v)
            except ValueError:
                return False
            return any(address in n for n in networks)

        return in_cidr
    cmp = _NUMBER_CMP[op]
    if op in ("lt", "lte", "gt", "gte", "num_eq"):
        target = parse_number(value)

        def number(ctx: Context) -> bool:
            n = js_number(ctx.get(attr, missing))
            return n is not None and cmp(n, target)

        return number
    if op.startswith("semver_"):
        version = semver_key(value)

        def semver(ctx: Context) -> bool:
            v = ctx.get(attr, missing)
            k = semver_key(v.strip()) if v.__class__ is str else None  # node-semver trims
            return k is not None and cmp(k, version)

        return semver
    moment = parse_datetime(value)

    def date(ctx: Context) -> bool:
        d = parse_datetime(ctx.get(attr, missing))
        return d is not None and cmp(d, moment)

    return date


def _conjunction(preds: list[Predicate]) -> Predicate | None:
    """All of `preds`; None when there are none (always true)."""
    if not preds:
        return None
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds

        def both(ctx: Context) -> bool:
            return a(ctx) and b(ctx)

        return both
    chain = tuple(preds)

    def every(ctx: Context) -> bool:
        for p in chain:  # noqa: SIM110 (a loop is faster than all() over a generator)
            if not p(ctx):
                return False
        return True

    return every


def _compile_segments(segments: list[Segment], environment: str) -> dict[str, Predicate]:
    by_name = {s.name: s for s in segments}
    done: dict[str, Predicate] = {}

    class _Lazy(Mapping[str, Predicate]):  # resolves nested segments in dependency order
        def __getitem__(self, name: str) -> Predicate:
            if name not in done:
                conds = [_compile_condition(c, self, environment) for c in by_name[name].conditions]
                done[name] = _conjunction(conds) or (lambda ctx: True)
            return done[name]

        def __iter__(self) -> Iterator[str]:
            return iter(by_name)

        def __len__(self) -> int:
            return len(by_name)

    lazy = _Lazy()
    for name in by_name:
        lazy[name]
    return done


# --- rules ----------------------------------------------------------------------------------------


def _sticky_value(ctx: Context, attr: str) -> str | None:
    """The context's id for bucketing: a non-empty string or an integer (as a string), else None."""
    v = ctx.get(attr)
    t = v.__class__
    if t is str:
        return v or None  # Unleash: an empty id is no id
    if t is int:
        return str(v)
    return None


StickyReader = Callable[[Context], str | None]


def _sticky_reader(stickiness: str, default_ids: tuple[str, ...]) -> StickyReader | None:
    """How to read a context's sticky id; None for `random` stickiness (a random bucket every time)."""
    if stickiness == "random":
        return None
    if stickiness == "default":

        def default_id(ctx: Context) -> str | None:
            for attr in default_ids:
                v = _sticky_value(ctx, attr)
                if v is not None:
                    return v
            return None

        return default_id

    def attribute_id(ctx: Context) -> str | None:
        return _sticky_value(ctx, stickiness)

    return attribute_id


def _bucket_text(text: str, seed: int) -> int:
    return _mmh3_hash(text, seed, False) if text.isascii() else hash_text(text, seed)


def _compile_split(
    split: Split, group: str, served: list[Evaluation], rng: random.Random
) -> Callable[[Context], Evaluation | None]:
    total = sum(v.weight for v in split.variants)
    table: list[tuple[int, Evaluation]] = []
    bound = 0
    for variant, result in zip(split.variants, served, strict=True):
        if variant.weight:
            bound += variant.weight
            table.append((bound, result))
    prefix = f"{split.group_id if split.group_id is not None else group}:"
    stick = split.stickiness
    read = _sticky_reader(stick, _DEFAULT_SPLIT_IDS)
    randomly = split.fallback == "random" or read is None
    plain = stick not in ("default", "random")  # an attribute: read inline, the common case
    rows = tuple(table)

    def pick(ctx: Context) -> Evaluation | None:
        if plain:
            v: Any = ctx.get(stick)
            t = v.__class__
            if t is int:
                v = str(v)
            elif t is not str or not v:
                v = None
        else:
            v = read(ctx) if read is not None else None
        if v is not None:
            text = prefix + v
            h = _mmh3_hash(text, VARIANT_SEED, False) if text.isascii() else hash_text(text, VARIANT_SEED)
            target = h % total + 1
        elif randomly:
            target = rng.randrange(total) + 1
        else:
            return None
        for limit, result in rows:
            if target <= limit:
                return result
        return rows[-1][1]  # unreachable: the last limit is the total

    overrides = tuple(
        (o.attribute, frozenset(o.values), result)
        for variant, result in zip(split.variants, served, strict=True)
        for o in variant.overrides
    )
    if not overrides:
        return pick

    def pick_overridden(ctx: Context) -> Evaluation | None:
        # Unleash checks every variant's overrides, in order, before hashing.
        for attr, values, result in overrides:
            v = ctx.get(attr)
            t = v.__class__
            if (t is str and v in values) or (t is int and str(v) in values):
                return result
        return pick(ctx)

    return pick_overridden


def _string_membership(conditions: list[Condition]) -> tuple[str, frozenset[str]] | None:
    """(attribute, strings) when `conditions` is one plain `in`/`eq` test against strings only."""
    if len(conditions) != 1:
        return None
    (cond,) = conditions
    if cond.inverted or cond.case_insensitive:
        return None
    values = cond.value if cond.op == "in" else [cond.value] if cond.op == "eq" else None
    if not isinstance(values, list) or not all(type(v) is str for v in values):
        return None
    if cond.attribute is None or cond.attribute == "environment":  # that one has a default
        return None
    return cond.attribute, frozenset(str(v) for v in values)


def _rollout_gate(rollout: Rollout, flag_key: str, rng: random.Random) -> Predicate | bool:
    """Whether a context falls in the rollout: a predicate, or True/False when that never depends on it."""
    percent = rollout.percent
    read = _sticky_reader(rollout.stickiness, _DEFAULT_ROLLOUT_IDS)
    randomly = rollout.fallback == "random" or read is None
    if percent <= 0:
        return False  # Unleash: `percentage > 0 && …`
    if percent >= 100:
        if randomly:
            return True
        assert read is not None

        def has_id(ctx: Context) -> bool:  # 100 %: every context that has an id, as Unleash does
            return read(ctx) is not None

        return has_id
    prefix = f"{rollout.group_id if rollout.group_id is not None else flag_key}:"
    if read is None:
        return lambda ctx: rng.randrange(100) < percent

    def gate(ctx: Context) -> bool:
        v = read(ctx)
        if v is None:
            return randomly and rng.randrange(100) < percent
        return _bucket_text(prefix + v, ROLLOUT_SEED) % 100 < percent

    return gate


def _compile_rule(
    rule: Rule, cond: Predicate | None, flag_key: str, rng: random.Random, miss: Evaluation | None
) -> RuleFn:
    """The rule as one function: its result when it matches the context, `miss` otherwise."""
    rollout = rule.rollout
    reason = Reason.SPLIT if rollout is not None else Reason.TARGETING_MATCH
    split: Callable[[Context], Evaluation | None] | None = None
    result: Evaluation | None = None
    if rule.split is not None:
        served = [
            Evaluation(v.value, v.name, Reason.SPLIT, payload=v.payload.model_dump() if v.payload else None)
            for v in rule.split.variants
        ]
        split = _compile_split(rule.split, flag_key, served, rng)
    else:
        result = Evaluation(rule.value, rule.variant, reason)

    gate = True if rollout is None else _rollout_gate(rollout, flag_key, rng)
    if gate is False:
        return lambda ctx: miss
    if rollout is not None and 0 < rollout.percent < 100 and rollout.stickiness not in ("default", "random"):
        percent, stick = rollout.percent, rollout.stickiness
        prefix = f"{rollout.group_id if rollout.group_id is not None else flag_key}:"
        randomly = rollout.fallback == "random"
        only = _string_membership(rule.conditions)
        if result is not None and only is not None:
            # The commonest shape of all (one attribute in a set of strings, a rollout, a value), fused
            # into one function: the SDK hot path ("role in [USER, ADMIN] and 30 % of userIds").
            hit, attr, strs = result, only[0], only[1]

            def membership_rollout_value(ctx: Context) -> Evaluation | None:
                v: Any = ctx.get(attr)
                if v.__class__ is not str or v not in strs:
                    return miss
                v = ctx.get(stick)
                t = v.__class__
                if t is int:
                    v = str(v)
                elif t is not str or not v:
                    return hit if randomly and rng.randrange(100) < percent else miss
                text = prefix + v
                h = _mmh3_hash(text, ROLLOUT_SEED, False) if text.isascii() else hash_text(text, ROLLOUT_SEED)
                return hit if h % 100 < percent else miss

            return membership_rollout_value
        if result is not None:
            # The common shape (conditions, a rollout, a value), fused into one function.
            hit, test = result, cond

            def rollout_value(ctx: Context) -> Evaluation | None:
                if test is not None and not test(ctx):
                    return miss
                v: Any = ctx.get(stick)
                t = v.__class__
                if t is int:
                    v = str(v)
                elif t is not str or not v:
                    return hit if randomly and rng.randrange(100) < percent else miss
                text = prefix + v
                h = _mmh3_hash(text, ROLLOUT_SEED, False) if text.isascii() else hash_text(text, ROLLOUT_SEED)
                return hit if h % 100 < percent else miss

            return rollout_value
    if gate is not True:
        cond = _conjunction([cond, gate]) if cond is not None else gate

    if split is not None:
        serve = split
        if cond is None:
            if miss is None:
                return serve
            return lambda ctx: serve(ctx) or miss
        test_split = cond

        def split_when(ctx: Context) -> Evaluation | None:
            return (serve(ctx) or miss) if test_split(ctx) else miss

        return split_when
    assert result is not None
    hit_value = result
    if cond is None:
        return lambda ctx: hit_value
    test_value = cond

    def value_when(ctx: Context) -> Evaluation | None:
        return hit_value if test_value(ctx) else miss

    return value_when


# --- flags ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    fn: FlagFn
    off: frozenset[int]  # ids of the results meaning "this flag is off" (disabled, prerequisite failed)
    is_boolean: bool
    always_off: bool


def _first_match(rule_fns: list[RuleFn], fallthrough: Evaluation) -> FlagFn:
    chain = tuple(rule_fns)

    def first_match(ctx: Context) -> Evaluation:
        for fn in chain:
            result = fn(ctx)
            if result is not None:
                return result
        return fallthrough

    return first_match


class _EnvironmentCompiler:
    def __init__(self, flagset: FlagSet, environment: str, rng: random.Random) -> None:
        self.flags = {f.key: f for f in flagset.flags}
        self.environment = environment
        self.rng = rng
        self.segments = _compile_segments(flagset.segments, environment)
        self.done: dict[str, _Compiled] = {}

    def compile(self, key: str) -> _Compiled:
        if key not in self.done:
            self.done[key] = self._compile(self.flags[key])
        return self.done[key]

    def _compile(self, flag: Flag) -> _Compiled:
        is_boolean = flag.type == "boolean"
        env: FlagEnvironment | None = flag.environments.get(self.environment)
        disabled = Evaluation(flag.default_value, None, Reason.DISABLED)
        if env is None or not env.enabled:
            return _Compiled(lambda ctx: disabled, frozenset({id(disabled)}), is_boolean, True)
        served = env.value if env.value is not None else flag.default_value
        if not env.rules:
            static = Evaluation(served, None, Reason.STATIC)
            body: FlagFn = lambda ctx: static  # noqa: E731
        else:
            fallthrough = Evaluation(served, None, Reason.DEFAULT)
            single = len(env.rules) == 1  # then the rule itself is the flag's function
            rule_fns = []
            for rule in env.rules:
                conds = [_compile_condition(c, self.segments, self.environment) for c in rule.conditions]
                miss = fallthrough if single else None
                rule_fns.append(_compile_rule(rule, _conjunction(conds), flag.key, self.rng, miss))
            body = rule_fns[0] if single else _first_match(rule_fns, fallthrough)  # type: ignore[assignment]
        if not flag.prerequisites:
            return _Compiled(body, frozenset(), is_boolean, False)

        failed = Evaluation(flag.default_value, None, Reason.DEFAULT)
        checks = [self._prerequisite(p) for p in flag.prerequisites]
        if any(check is False for check in checks):  # a prerequisite that never holds
            return _Compiled(lambda ctx: failed, frozenset({id(failed)}), is_boolean, True)
        check = _conjunction([c for c in checks if c is not True])  # type: ignore[misc]
        if check is None:  # every prerequisite always holds
            return _Compiled(body, frozenset(), is_boolean, False)

        def gated(ctx: Context) -> Evaluation:
            return body(ctx) if check(ctx) else failed

        return _Compiled(gated, frozenset({id(failed)}), is_boolean, False)

    def _prerequisite(self, pre: Prerequisite) -> Predicate | bool:
        """A predicate for "the prerequisite holds", or True/False when it always/never does.

        As Unleash's dependencies: one level deep (a required flag that has prerequisites of its own
        never satisfies one), "on" meaning what isEnabled says, a variant what getVariant names
        (NO_VARIANT when on without one), and `enabled: false` requiring the flag to be off.
        """
        if self.flags[pre.flag].prerequisites:
            return False
        required = self.compile(pre.flag)
        if required.always_off:
            return not pre.enabled
        fn, off, is_boolean = required.fn, required.off, required.is_boolean
        if not pre.enabled:
            if is_boolean:

                def is_off(ctx: Context) -> bool:
                    r = fn(ctx)
                    return r.value is not True or id(r) in off

                return is_off

            def is_disabled(ctx: Context) -> bool:
                return id(fn(ctx)) in off

            return is_disabled
        if pre.variants:
            names = frozenset(pre.variants)

            def serves_variant(ctx: Context) -> bool:
                r = fn(ctx)
                if id(r) in off or (is_boolean and r.value is not True):
                    return False
                return (r.variant if r.variant is not None else NO_VARIANT) in names

            return serves_variant
        if is_boolean:

            def is_on(ctx: Context) -> bool:
                r = fn(ctx)
                return r.value is True and id(r) not in off

            return is_on

        def is_enabled(ctx: Context) -> bool:
            return id(fn(ctx)) not in off

        return is_enabled


# --- the evaluator ------------------------------------------------------------------------------


def _not_found(key: str) -> Evaluation:
    return Evaluation(None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND, f"no flag {key!r}")


class Evaluator:
    """Evaluates the flags of one FlagSet version; build it with `compile_flagset`, then share it.

    Thread-safe (it holds no mutable state besides the random generator used by `fallback:
    random` rules).
    """

    __slots__ = ("_bool", "_bool_disabled", "_defaults", "_disabled", "_fns", "_types", "version")

    def __init__(self, flagset: FlagSet, *, rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self.version = flagset.version
        names = sorted({env for f in flagset.flags for env in f.environments})
        tables: dict[str, dict[str, FlagFn]] = {}
        for name in names:
            compiler = _EnvironmentCompiler(flagset, name, rng)
            tables[name] = {f.key: compiler.compile(f.key).fn for f in flagset.flags}
        disabled: dict[str, FlagFn] = {}
        for flag in flagset.flags:
            off = Evaluation(flag.default_value, None, Reason.DISABLED)
            disabled[flag.key] = lambda ctx, off=off: off  # type: ignore[misc]
        self._fns = tables
        self._disabled = disabled  # for environments no flag configures
        booleans = {f.key for f in flagset.flags if f.type == "boolean"}
        self._bool = {
            env: {k: fn for k, fn in table.items() if k in booleans} for env, table in tables.items()
        }
        self._bool_disabled = {k: fn for k, fn in disabled.items() if k in booleans}
        self._types: dict[str, FlagType] = {f.key: f.type for f in flagset.flags}
        self._defaults: dict[str, Any] = {f.key: f.default_value for f in flagset.flags}

    @property
    def keys(self) -> list[str]:
        return list(self._types)

    def flag_type(self, key: str) -> FlagType | None:
        return self._types.get(key)

    def is_enabled(self, key: str, context: Context, environment: str, default: bool = False) -> bool:
        """The value of boolean flag `key`; `default` when it is missing, not boolean, or fails.

        The fast path for SDKs: the same decision as `evaluate(...).value`, without the report.
        """
        try:
            return self._bool[environment][key](context).value  # type: ignore[no-any-return]
        except Exception:
            if environment not in self._bool and key in self._bool_disabled:
                return self._bool_disabled[key](context).value  # type: ignore[no-any-return]
            return default

    def _bool_table(self, environment: str) -> dict[str, FlagFn]:
        return self._bool.get(environment, self._bool_disabled)

    def evaluate(
        self, key: str, context: Context, environment: str, expected_type: FlagType | None = None
    ) -> Evaluation:
        """Evaluate flag `key` for `context` in `environment`; never raises.

        `expected_type`, when given, is the type the caller wants: another flag type is a
        TYPE_MISMATCH error (with value None, so the caller serves its own default).
        """
        fn = self._fns.get(environment, self._disabled).get(key)
        if fn is None:
            return _not_found(key)
        if expected_type is not None and self._types[key] != expected_type:
            return Evaluation(
                None, None, Reason.ERROR, ErrorCode.TYPE_MISMATCH,
                f"flag {key!r} is {self._types[key]}, not {expected_type}",
            )  # fmt: skip
        if context.__class__ is not dict and not isinstance(context, Mapping):
            return Evaluation(
                self._defaults[key], None, Reason.ERROR, ErrorCode.INVALID_CONTEXT,
                f"the context must be a mapping, not {type(context).__name__}",
            )  # fmt: skip
        try:
            return fn(context)
        except Exception as exc:  # a bug or a hostile Mapping: report, never raise
            return Evaluation(
                self._defaults[key], None, Reason.ERROR, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}"
            )

    def evaluate_all(self, context: Context, environment: str) -> dict[str, Evaluation]:
        """Every flag evaluated for one context (for bootstrapping a client), in definition order."""
        return {key: self.evaluate(key, context, environment) for key in self._types}

    def for_environment(self, environment: str) -> EnvironmentEvaluator:
        return EnvironmentEvaluator(self, environment)


class EnvironmentEvaluator:
    """An Evaluator bound to one environment, as an SDK is: one lookup fewer per evaluation."""

    __slots__ = ("_bool", "environment", "evaluator")

    def __init__(self, evaluator: Evaluator, environment: str) -> None:
        self.evaluator = evaluator
        self.environment = environment
        self._bool = evaluator._bool_table(environment)

    def is_enabled(self, key: str, context: Context, default: bool = False) -> bool:
        try:
            return self._bool[key](context).value  # type: ignore[no-any-return]
        except Exception:
            return default

    def evaluate(self, key: str, context: Context, expected_type: FlagType | None = None) -> Evaluation:
        return self.evaluator.evaluate(key, context, self.environment, expected_type)

    def evaluate_all(self, context: Context) -> dict[str, Evaluation]:
        return self.evaluator.evaluate_all(context, self.environment)


def compile_flagset(flagset: FlagSet, *, rng: random.Random | None = None) -> Evaluator:
    """Compile a validated FlagSet; `rng` drives only `fallback: random` rules (seed it in tests)."""
    return Evaluator(flagset, rng=rng)
