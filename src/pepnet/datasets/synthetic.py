"""Deterministic synthetic multi-domain, multi-task interaction logs with planted effects.

The generator produces Kuaishou-style impression logs: every row is one exposure of an
item (with its author and category) to a user (with a user segment) in one of
``n_domains`` scenarios, with optional extra categorical context fields ``f0, f1, ...``,
dense numeric features ``d0, d1, ...`` and one binary label per task.

Labels are ``Bernoulli(sigmoid(logit))`` where the logit is built from hidden parameters
that are drawn once from the seed:

* ``domain x task`` base rates (bias per domain and task) and a ``user_segment x domain``
  effect;
* a per-domain rotation/scaling of the user-item latent interaction
  (``u^T M_d v`` with task-specific weighting), so a domain-aware model beats a
  domain-blind one;
* per-user and per-item (category + author + item) biases that differ by task;
* linear effects of the dense features (shared plus a per-domain part);
* small hashed effects of the extra categorical fields.

Task ``t >= 1`` mixes in the effect of task 0 (correlation ``rho``), and the per-task
constant is calibrated so that the marginal positive rate is close to the target rate
(``task_rates``; by default 20 % for the first task, sparser for later tasks) at any ``signal``
strength.

Three planted seesaw effects (all off by default; added after the task mixing, so each is
exactly as stated; the benchmark ``configs/seesaw.yaml`` and docs/seesaw.md use them):

* ``domain_flip``: dense feature ``d0`` has effect ``+domain_flip`` in domain 0 and
  ``-domain_flip`` in every other domain (every task);
* ``task_flip``: dense feature ``d1`` has effect ``+task_flip`` on task 0 and ``-task_flip`` on
  every other task (every domain);
* ``prior_gate``: dense feature ``d2`` has effect ``prior_gate * a_u * b_i`` (every task), where
  ``a_u`` and ``b_i`` are per-user and per-item sensitivities drawn once (Exponential(1): many
  near 0, a few large), so how much ``d2`` matters depends on who sees what.

``domain_shares`` sets each domain's share of the rows (default: shares ∝ (d+1)^-0.6). With
``signal=0`` every logit equals the per-task constant. With ``drift > 0`` and several
periods, the domain biases shift and the domain interaction matrices rotate by
``drift`` radians (times a per-plane factor) per period.

Determinism: the random stream of every column is keyed by ``(seed, block index,
column)`` with fixed blocks of :data:`BLOCK_ROWS` rows, and every derived quantity is an
element-wise function of the row, so ``generate(spec, a, n)`` is identical to slicing
``generate(spec)`` whatever the chunking.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "BLOCK_ROWS",
    "arrow_schema",
    "bayes_auc",
    "SyntheticSpec",
    "generate",
    "iter_frames",
    "oracle_logits",
    "oracle_probabilities",
    "period_bounds",
    "target_rates",
    "write",
]

BLOCK_ROWS = 65_536
"""Rows per random block; the random streams are keyed by block index."""

LATENT_DIM = 8
N_SEGMENTS = 8
N_CATEGORIES = 50
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
DAY = 86_400
TASK_RHO = 0.6  # correlation of task t>=1 effects with the task-0 effect
_CALIBRATION_ROWS = 32_768
_LOGIT_BATCH = BLOCK_ROWS

# column streams (third element of the SeedSequence spawn key)
_S_DOMAIN, _S_USER, _S_ITEM, _S_DENSE, _S_EXTRA, _S_LABEL, _S_MISSING = range(7)


@dataclass(frozen=True)
class SyntheticSpec:
    """Description of a synthetic data set; see the module docstring."""

    n_rows: int = 100_000
    n_users: int = 5_000
    n_items: int = 20_000
    n_authors: int = 1_000
    n_domains: int = 3
    tasks: tuple[str, ...] = ("click", "like")
    extra_sparse: tuple[int, ...] = ()
    n_dense: int = 2
    signal: float = 1.0
    missing_rate: float = 0.0
    drift: float = 0.0
    n_periods: int = 1
    seed: int = 0
    domain_shares: tuple[float, ...] = ()
    task_rates: tuple[float, ...] = ()
    domain_flip: float = 0.0
    task_flip: float = 0.0
    prior_gate: float = 0.0

    def __post_init__(self) -> None:
        # accept lists for the tuple fields (e.g. from configs) while staying hashable
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        object.__setattr__(self, "extra_sparse", tuple(int(c) for c in self.extra_sparse))
        object.__setattr__(self, "domain_shares", tuple(float(x) for x in self.domain_shares))
        object.__setattr__(self, "task_rates", tuple(float(x) for x in self.task_rates))
        if self.n_rows < 0:
            raise ValueError("n_rows must be >= 0")
        for name in ("n_users", "n_items", "n_authors", "n_domains", "n_periods"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("n_users", "n_items", "n_authors"):
            if int(getattr(self, name)) >= 2**32:
                raise ValueError(f"{name} must be < 2**32")
        if not self.tasks:
            raise ValueError("at least one task is required")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("task names must be unique")
        if any(c < 1 or c >= 2**32 for c in self.extra_sparse):
            raise ValueError("extra_sparse cardinalities must be in [1, 2**32)")
        if self.n_dense < 0:
            raise ValueError("n_dense must be >= 0")
        if not 0.0 <= self.missing_rate <= 1.0:
            raise ValueError("missing_rate must be in [0, 1]")
        if self.signal < 0:
            raise ValueError("signal must be >= 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.domain_shares and (len(self.domain_shares) != self.n_domains or min(self.domain_shares) <= 0):
            raise ValueError(f"domain_shares must hold n_domains={self.n_domains} positive numbers")
        if self.task_rates and (len(self.task_rates) != len(self.tasks)
                                or not all(0.0 < r < 1.0 for r in self.task_rates)):
            raise ValueError(f"task_rates must hold one rate in (0, 1) per task ({len(self.tasks)})")
        for name, needs in (("domain_flip", 1), ("task_flip", 2), ("prior_gate", 3)):
            if getattr(self, name) != 0.0 and self.n_dense < needs:
                raise ValueError(f"{name} acts on dense feature d{needs - 1}: it needs n_dense >= {needs}")
        clash = set(self.tasks) & set(self.feature_columns)
        if clash:
            raise ValueError(f"task names clash with feature columns: {sorted(clash)}")

    @property
    def sparse_columns(self) -> tuple[str, ...]:
        """Categorical feature columns (ids and context fields)."""
        base = ("user_id", "item_id", "author_id", "domain_id", "user_segment", "item_category")
        return base + tuple(f"f{j}" for j in range(len(self.extra_sparse)))

    @property
    def dense_columns(self) -> tuple[str, ...]:
        return tuple(f"d{j}" for j in range(self.n_dense))

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return self.sparse_columns + self.dense_columns

    @property
    def cardinalities(self) -> dict[str, int]:
        """Number of distinct values of every categorical column (values are 0..card-1)."""
        card = {
            "user_id": self.n_users,
            "item_id": self.n_items,
            "author_id": self.n_authors,
            "domain_id": self.n_domains,
            "user_segment": N_SEGMENTS,
            "item_category": N_CATEGORIES,
        }
        card.update({f"f{j}": c for j, c in enumerate(self.extra_sparse)})
        return card

    @property
    def columns(self) -> tuple[str, ...]:
        """All columns of a generated frame, in order."""
        base = ("user_id", "item_id", "author_id", "domain_id", "time", "user_segment", "item_category")
        return (
            base
            + tuple(f"f{j}" for j in range(len(self.extra_sparse)))
            + self.dense_columns
            + self.tasks
        )


def target_rates(n_tasks: int) -> np.ndarray:
    """Marginal positive rate targeted for each task by default: 0.2, 0.05, 0.029, 0.02, ..."""
    return 0.2 / (1.0 + 3.0 * np.arange(n_tasks, dtype=np.float64))


def arrow_schema(spec: SyntheticSpec) -> pa.Schema:
    """The pyarrow schema of the generated data."""
    fields = [
        pa.field("user_id", pa.int64()),
        pa.field("item_id", pa.int64()),
        pa.field("author_id", pa.int64()),
        pa.field("domain_id", pa.int32()),
        pa.field("time", pa.int64()),
        pa.field("user_segment", pa.int32()),
        pa.field("item_category", pa.int32()),
    ]
    fields += [pa.field(f"f{j}", pa.int64()) for j in range(len(spec.extra_sparse))]
    fields += [pa.field(c, pa.float32()) for c in spec.dense_columns]
    fields += [pa.field(t, pa.int8()) for t in spec.tasks]
    return pa.schema(fields)


# ----------------------------------------------------------------------------------------
# random helpers


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrap-around arithmetic)."""
    x = x + _M1
    x = (x ^ (x >> _S30)) * _M2
    x = (x ^ (x >> _S27)) * _M3
    return x ^ (x >> _S31)


def _hash_unit(x: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to a zero-mean, unit-variance uniform variable (float32)."""
    u = (x >> _S11).astype(np.float64) * (1.0 / 2.0**53)
    return ((u - 0.5) * math.sqrt(12.0)).astype(np.float32)


def _powerlaw_rank(u: np.ndarray, n: int, a: float, q: float) -> np.ndarray:
    """Zipf-Mandelbrot-like popularity rank in [0, n) from uniforms ``u`` (float64).

    Continuous inverse CDF of a density proportional to ``(r + q)^-a`` on ``[0, n)``.
    """
    if n == 1:
        return np.zeros(u.shape, dtype=np.int64)
    if abs(a - 1.0) < 1e-9:
        lo, hi = math.log(q), math.log(n + q)
        x = np.exp(lo + u * (hi - lo))
    else:
        e = 1.0 - a
        lo, hi = q**e, (n + q) ** e
        x = (lo + u * (hi - lo)) ** (1.0 / e)
    r = (x - q).astype(np.int64)
    np.clip(r, 0, n - 1, out=r)
    return r


_PRIMES = (2_654_435_761, 2_246_822_519, 3_266_489_917, 668_265_263, 374_761_393)


class _AffinePerm:
    """Bijection rank -> id on [0, n): ``(rank * mult + offset) mod n``."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n = n
        self.offset = int(rng.integers(n)) if n > 1 else 0
        mult = 1
        for p in _PRIMES:
            if math.gcd(p % n, n) == 1 and p % n != 0:
                mult = p % n
                break
        self.mult = mult

    def __call__(self, rank: np.ndarray) -> np.ndarray:
        if self.n == 1:
            return np.zeros(rank.shape, dtype=np.int64)
        if self.n < 3_037_000_499:  # rank * mult < n**2 fits in int64
            return (rank * self.mult + self.offset) % self.n
        r = rank.astype(object)  # pragma: no cover - ids >= 3e9 are not supported in practice
        return np.asarray((r * self.mult + self.offset) % self.n, dtype=np.int64)


def _categorical(rng: np.random.Generator, n: int, k: int, alpha: float) -> np.ndarray:
    """``n`` draws from a fixed skewed distribution over ``k`` values (p ∝ (i+1)^-alpha)."""
    p = (np.arange(k) + 1.0) ** -alpha
    p = rng.permutation(p / p.sum())
    idx = np.searchsorted(np.cumsum(p), rng.random(n), side="right")
    return np.minimum(idx, k - 1).astype(np.int32)


# ----------------------------------------------------------------------------------------
# hidden parameters


@dataclass
class _Params:
    user_segment: np.ndarray  # [U] int32
    user_vec: np.ndarray  # [U, K] float32
    user_bias: np.ndarray  # [U, T] float32
    item_category: np.ndarray  # [I] int32
    item_author: np.ndarray  # [I] int64
    item_vec: np.ndarray  # [I, K] float32
    item_bias: np.ndarray  # [I, T] float32 (category + author + item)
    domain_cdf: np.ndarray  # [D] float64
    domain_bias: np.ndarray  # [D, T] float32
    domain_shift: np.ndarray  # [D, T] float32 (bias change per unit drift)
    segment_domain: np.ndarray  # [S, D, T] float32
    domain_mix: np.ndarray  # [D, K, K] float32 (rotation x scaling of the interaction)
    domain_basis: np.ndarray  # [D, K, K] float64 orthogonal basis of the drift rotation
    drift_freq: np.ndarray  # [D, K//2] float64 rotation speed per plane
    task_weight: np.ndarray  # [T, K] float32
    user_sense: np.ndarray  # [U] float32 sensitivity a_u of prior_gate
    item_sense: np.ndarray  # [I] float32 sensitivity b_i of prior_gate
    dense_weight: np.ndarray  # [n_dense, T] float32
    dense_domain: np.ndarray  # [D, n_dense, T] float32
    extra_salt: np.ndarray  # [n_extra] uint64
    extra_scale: float
    user_perm: _AffinePerm
    item_perm: _AffinePerm
    extra_perm: list[_AffinePerm]
    base: np.ndarray  # [T] float64 per-task constant (calibrated)


def _params(spec: SyntheticSpec) -> _Params:
    return _params_cached(dataclasses.replace(spec, n_rows=0, missing_rate=0.0))


@functools.lru_cache(maxsize=8)
def _params_cached(spec: SyntheticSpec) -> _Params:
    rng = _rng(spec.seed, 0)
    # I = number of items, the notation of the shapes above (ambiguous-name rule silenced for it)
    U, I, A, D, T = spec.n_users, spec.n_items, spec.n_authors, spec.n_domains, len(spec.tasks)  # noqa: E741
    K = LATENT_DIM
    f32 = np.float32
    sigma = K**-0.25  # so that <u, v> has unit variance

    def normal(shape, scale=1.0):
        return (rng.standard_normal(shape, dtype=np.float32) * f32(scale)).astype(f32, copy=False)

    # users: segment, latent vector clustered by segment, task-specific bias
    user_segment = _categorical(rng, U, N_SEGMENTS, 0.8)
    seg_center = normal((N_SEGMENTS, K), sigma)
    user_vec = f32(0.6) * seg_center[user_segment] + normal((U, K), 0.8 * sigma)
    seg_bias = normal((N_SEGMENTS, T), 0.2)
    user_bias = seg_bias[user_segment] + normal((U, T), 0.45)

    # items: category, author, latent vector clustered by category, task-specific bias
    item_category = _categorical(rng, I, N_CATEGORIES, 0.7)
    author_perm = _AffinePerm(A, rng)
    item_author = author_perm(_powerlaw_rank(rng.random(I), A, 1.0, 2.0))
    cat_center = normal((N_CATEGORIES, K), sigma)
    item_vec = f32(0.6) * cat_center[item_category] + normal((I, K), 0.8 * sigma)
    cat_bias = normal((N_CATEGORIES, T), 0.3)
    author_bias = normal((A, T), 0.3)
    item_bias = cat_bias[item_category] + author_bias[item_author] + normal((I, T), 0.4)

    # domains: traffic share, task base rates, segment x domain, interaction mixing
    share = np.asarray(spec.domain_shares) if spec.domain_shares else (np.arange(D) + 1.0) ** -0.6
    domain_cdf = np.cumsum(share / share.sum())
    domain_cdf[-1] = 1.0
    spread = (np.arange(D) - (D - 1) / 2.0) / max(D - 1, 1)  # in [-0.5, 0.5]
    domain_bias = normal((D, T), 0.15)
    domain_bias[:, 0] += rng.permutation(spread).astype(f32) * f32(1.2)
    for t in range(1, T):
        domain_bias[:, t] += rng.permutation(spread).astype(f32) * f32(0.8)
    domain_shift = normal((D, T), 0.5)
    segment_domain = normal((N_SEGMENTS, D, T), 0.3)
    strength = 0.5 + rng.permutation(spread + 0.5) if D > 1 else np.ones(1)  # 0.5 .. 1.5
    domain_mix = np.empty((D, K, K), dtype=f32)
    domain_basis = np.empty((D, K, K), dtype=np.float64)
    for d in range(D):
        q, r = np.linalg.qr(np.eye(K) + 0.7 * rng.standard_normal((K, K)))
        q = q * np.sign(np.diag(r))  # proper orthogonal matrix, near the identity
        scale = strength[d] * np.exp(0.5 * rng.standard_normal(K))
        scale *= strength[d] / np.sqrt(np.mean(scale**2))
        domain_mix[d] = (q * scale[None, :]).astype(f32)
        basis, _ = np.linalg.qr(rng.standard_normal((K, K)))
        domain_basis[d] = basis
    drift_freq = rng.uniform(0.5, 1.5, size=(D, K // 2))
    task_weight = (1.0 + 0.3 * rng.standard_normal((T, K))).astype(f32)

    # dense features: shared (|w| in [0.3, 0.6] / sqrt(n_dense)) + domain-specific linear effect
    nd = spec.n_dense
    dscale = 1.0 / math.sqrt(max(nd, 1))
    dense_weight = (rng.choice([-1.0, 1.0], size=(nd, T)) * rng.uniform(0.3, 0.6, size=(nd, T)) * dscale).astype(f32)
    dense_domain = normal((D, nd, T), 0.25 * dscale)

    n_extra = len(spec.extra_sparse)
    extra_salt = rng.integers(0, 2**63, size=n_extra, dtype=np.int64).astype(np.uint64)
    extra_scale = 0.4 / math.sqrt(max(n_extra, 1))

    # prior_gate sensitivities (own stream: the parameters above do not depend on them)
    srng = _rng(spec.seed, 0, 2)
    user_sense = srng.exponential(1.0, U).astype(f32)
    item_sense = srng.exponential(1.0, I).astype(f32)

    # id popularity permutations (independent stream so they do not depend on the above)
    prng = _rng(spec.seed, 0, 1)
    user_perm = _AffinePerm(U, prng)
    item_perm = _AffinePerm(I, prng)
    extra_perm = [_AffinePerm(c, prng) for c in spec.extra_sparse]

    params = _Params(
        user_segment=user_segment,
        user_vec=np.ascontiguousarray(user_vec, dtype=f32),
        user_bias=np.ascontiguousarray(user_bias, dtype=f32),
        item_category=item_category,
        item_author=item_author.astype(np.int64),
        item_vec=np.ascontiguousarray(item_vec, dtype=f32),
        item_bias=np.ascontiguousarray(item_bias, dtype=f32),
        domain_cdf=domain_cdf,
        domain_bias=domain_bias,
        domain_shift=domain_shift,
        segment_domain=segment_domain,
        domain_mix=domain_mix,
        domain_basis=domain_basis,
        drift_freq=drift_freq,
        task_weight=task_weight,
        user_sense=user_sense,
        item_sense=item_sense,
        dense_weight=dense_weight,
        dense_domain=dense_domain,
        extra_salt=extra_salt,
        extra_scale=extra_scale,
        user_perm=user_perm,
        item_perm=item_perm,
        extra_perm=extra_perm,
        base=np.zeros(T),
    )
    params.base = _calibrate(spec, params)
    return params


def _calibrate(spec: SyntheticSpec, P: _Params) -> np.ndarray:
    """Per-task constant so that E[sigmoid(base + signal * effect)] hits the target rate."""
    target = np.asarray(spec.task_rates) if spec.task_rates else target_rates(len(spec.tasks))
    logit_target = np.log(target / (1.0 - target))
    if spec.signal == 0.0:
        return logit_target
    n = _CALIBRATION_ROWS
    raw = _draw(spec, P, lambda s, j=0: _rng(spec.seed, 2, s, j), n)
    period = np.arange(n, dtype=np.int64) * spec.n_periods // n
    eff = spec.signal * _effects(spec, P, raw["user_id"], raw["item_id"], raw["domain_id"], period,
                                 raw["dense"], raw["extra"]).astype(np.float64)
    base = np.empty(len(target))
    for t in range(len(target)):
        lo, hi = -30.0, 30.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            rate = np.mean(1.0 / (1.0 + np.exp(-(mid + eff[:, t]))))
            lo, hi = (mid, hi) if rate < target[t] else (lo, mid)
        base[t] = 0.5 * (lo + hi)
    return base


# ----------------------------------------------------------------------------------------
# row generation


def _draw(spec: SyntheticSpec, P: _Params, rng_for, n: int) -> dict:
    """Random per-row inputs of ``n`` rows; ``rng_for(stream, sub)`` gives the generators."""
    g = rng_for(_S_DOMAIN)
    domain = np.searchsorted(P.domain_cdf, g.random(n), side="right").astype(np.int32)
    np.minimum(domain, spec.n_domains - 1, out=domain)
    user = P.user_perm(_powerlaw_rank(rng_for(_S_USER).random(n), spec.n_users, 0.95, 3.0))
    item = P.item_perm(_powerlaw_rank(rng_for(_S_ITEM).random(n), spec.n_items, 1.05, 10.0))
    dense = rng_for(_S_DENSE).standard_normal((n, spec.n_dense), dtype=np.float32)
    extra = [
        perm(_powerlaw_rank(rng_for(_S_EXTRA, j).random(n), card, 1.05, 3.0))
        for j, (card, perm) in enumerate(zip(spec.extra_sparse, P.extra_perm, strict=True))
    ]
    return {"domain_id": domain, "user_id": user, "item_id": item, "dense": dense, "extra": extra}


def _domain_matrix(spec: SyntheticSpec, P: _Params, d: int, period: int) -> np.ndarray:
    m = P.domain_mix[d]
    if spec.drift == 0.0 or period == 0:
        return m
    K = LATENT_DIM
    blk = np.eye(K)
    for i in range(K // 2):
        th = spec.drift * period * P.drift_freq[d, i]
        c, s = math.cos(th), math.sin(th)
        blk[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, -s], [s, c]]
    rot = P.domain_basis[d] @ blk @ P.domain_basis[d].T
    return (rot @ m.astype(np.float64)).astype(np.float32)


def _effects(spec, P: _Params, user, item, domain, period, dense, extra) -> np.ndarray:
    """Planted effect per row and task (without the constant and the ``signal`` scale).

    Everything is an element-wise function of the row (no BLAS reductions), so results do
    not depend on how rows are batched.
    """
    n, T = len(user), len(spec.tasks)
    out = np.empty((n, T), dtype=np.float32)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for s in range(0, n, _LOGIT_BATCH):
        sl = slice(s, min(n, s + _LOGIT_BATCH))
        out[sl] = _effects_batch(spec, P, user[sl], item[sl], domain[sl], period[sl], dense[sl],
                                 [x[sl] for x in extra], cache)
    return out


def _effects_batch(spec, P, user, item, domain, period, dense, extra, cache) -> np.ndarray:
    n, T, K, D = len(user), len(spec.tasks), LATENT_DIM, spec.n_domains
    # (``take`` is much faster than fancy indexing for row gathers)
    e = P.domain_bias.take(domain, axis=0)
    e += P.user_bias.take(user, axis=0)
    e += P.item_bias.take(item, axis=0)
    seg = P.user_segment.take(user)
    e += P.segment_domain.reshape(N_SEGMENTS * D, T).take(seg.astype(np.int64) * D + domain, axis=0)
    drifting = spec.drift != 0.0 and spec.n_periods > 1
    if drifting:
        e += (np.float32(spec.drift) * period.astype(np.float32))[:, None] * P.domain_shift.take(domain, axis=0)
    # dense features: shared + domain-specific linear effect
    for j in range(spec.n_dense):
        e += dense[:, j : j + 1] * (P.dense_weight[j] + P.dense_domain[:, j, :].take(domain, axis=0))
    # hashed effects of the extra categorical fields
    for j, values in enumerate(extra):
        h = _mix64(values.astype(np.uint64) ^ P.extra_salt[j])
        for t in range(T):
            e[:, t] += np.float32(P.extra_scale) * _hash_unit(_mix64(h + np.uint64(t + 1)))
    # domain-specific interaction u^T M_{d,p} diag(w_t) v, computed in a [K, n] layout
    uT = np.ascontiguousarray(P.user_vec.take(user, axis=0).T)
    umT = np.empty((K, n), dtype=np.float32)
    p_lo, p_hi = (int(period.min()), int(period.max())) if drifting else (0, 0)
    for p in range(p_lo, p_hi + 1):
        pmask = None if p_lo == p_hi else period == p
        for d in range(D):
            if D == 1 and pmask is None:
                idx = None
                ud = uT
            else:
                mask = domain == d if pmask is None else (domain == d) & pmask
                idx = np.flatnonzero(mask)
                if idx.size == 0:
                    continue
                ud = uT.take(idx, axis=1)
            key = (d, p)
            if key not in cache:
                cache[key] = _domain_matrix(spec, P, d, p)
            m = cache[key]
            acc = np.empty_like(ud)
            for k in range(K):
                a = ud[0] * m[0, k]
                for j in range(1, K):
                    a += ud[j] * m[j, k]
                acc[k] = a
            if idx is None:
                umT = acc
            else:
                umT[:, idx] = acc
    umT *= P.item_vec.take(item, axis=0).T
    for t in range(T):
        w = P.task_weight[t]
        a = umT[0] * w[0]
        for j in range(1, K):
            a += umT[j] * w[j]
        e[:, t] += a
    # multi-task structure: later tasks correlate with the first
    if T > 1:
        e[:, 1:] *= np.float32(math.sqrt(1.0 - TASK_RHO**2))
        e[:, 1:] += np.float32(TASK_RHO) * e[:, :1]
    _seesaw_effects(spec, P, user, item, domain, dense, e)
    return e


def _seesaw_effects(spec, P: _Params, user, item, domain, dense, e: np.ndarray) -> None:
    """Add the planted seesaw effects (module docstring) to ``e`` [n, T] in place."""
    if spec.domain_flip:
        sign = np.where(domain == 0, np.float32(1.0), np.float32(-1.0))
        e += (np.float32(spec.domain_flip) * sign * dense[:, 0])[:, None]
    if spec.task_flip:
        x = np.float32(spec.task_flip) * dense[:, 1]
        e[:, 0] += x
        e[:, 1:] -= x[:, None]
    if spec.prior_gate:
        gain = P.user_sense.take(user) * P.item_sense.take(item)
        e += (np.float32(spec.prior_gate) * gain * dense[:, 2])[:, None]


def _logits(spec, P, user, item, domain, period, dense, extra) -> np.ndarray:
    n, T = len(user), len(spec.tasks)
    base = P.base.astype(np.float32)
    if spec.signal == 0.0:
        return np.broadcast_to(base, (n, T)).copy()
    eff = _effects(spec, P, user, item, domain, period, dense, extra)
    eff *= np.float32(spec.signal)
    eff += base
    return eff


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _table(spec: SyntheticSpec, start: int, n: int) -> pa.Table:
    P = _params(spec)
    T = len(spec.tasks)
    stop = start + n
    if n == 0:
        return arrow_schema(spec).empty_table()
    b0, b1 = start // BLOCK_ROWS, (stop - 1) // BLOCK_ROWS
    parts: list[dict] = []
    label_u, miss_u = [], []
    for b in range(b0, b1 + 1):
        lo = max(start, b * BLOCK_ROWS) - b * BLOCK_ROWS
        hi = min(stop, (b + 1) * BLOCK_ROWS) - b * BLOCK_ROWS
        rng_for = lambda s, j=0, b=b: _rng(spec.seed, 1, b, s, j)  # noqa: E731
        raw = _draw(spec, P, rng_for, BLOCK_ROWS)
        parts.append({
            "domain_id": raw["domain_id"][lo:hi],
            "user_id": raw["user_id"][lo:hi],
            "item_id": raw["item_id"][lo:hi],
            "dense": raw["dense"][lo:hi],
            "extra": [x[lo:hi] for x in raw["extra"]],
        })
        label_u.append(rng_for(_S_LABEL).random((BLOCK_ROWS, T), dtype=np.float32)[lo:hi])
        if T > 1 and spec.missing_rate > 0:
            miss_u.append(rng_for(_S_MISSING).random((BLOCK_ROWS, T - 1), dtype=np.float32)[lo:hi])

    def cat(key):
        return parts[0][key] if len(parts) == 1 else np.concatenate([p[key] for p in parts])

    domain, user, item, dense = cat("domain_id"), cat("user_id"), cat("item_id"), cat("dense")
    extra = [
        parts[0]["extra"][j] if len(parts) == 1 else np.concatenate([p["extra"][j] for p in parts])
        for j in range(len(spec.extra_sparse))
    ]
    rows = np.arange(start, stop, dtype=np.int64)
    total = max(spec.n_rows, 1)
    time = T0 + rows * (spec.n_periods * DAY) // total
    period = rows * spec.n_periods // total
    del rows

    prob = _sigmoid(_logits(spec, P, user, item, domain, period, dense, extra))
    lu = np.concatenate(label_u) if len(label_u) > 1 else label_u[0]
    labels = (lu < prob).astype(np.int8)
    del prob, lu
    mu = (np.concatenate(miss_u) if len(miss_u) > 1 else miss_u[0]) if miss_u else None

    cols: dict[str, pa.Array] = {
        "user_id": pa.array(user),
        "item_id": pa.array(item),
        "author_id": pa.array(P.item_author.take(item)),
        "domain_id": pa.array(domain),
        "time": pa.array(time),
        "user_segment": pa.array(P.user_segment.take(user)),
        "item_category": pa.array(P.item_category.take(item)),
    }
    for j, x in enumerate(extra):
        cols[f"f{j}"] = pa.array(x)
    for j in range(spec.n_dense):
        cols[f"d{j}"] = pa.array(np.ascontiguousarray(dense[:, j]))
    for t, name in enumerate(spec.tasks):
        lab = np.ascontiguousarray(labels[:, t])
        if t > 0 and mu is not None:
            cols[name] = pa.array(lab, mask=mu[:, t - 1] < np.float32(spec.missing_rate))
        else:
            cols[name] = pa.array(lab)
    return pa.Table.from_pydict(cols, schema=arrow_schema(spec))


def _check_range(spec: SyntheticSpec, start_row: int, n_rows: int | None) -> tuple[int, int]:
    if start_row < 0 or start_row > spec.n_rows:
        raise ValueError(f"start_row {start_row} outside [0, {spec.n_rows}]")
    if n_rows is None:
        n_rows = spec.n_rows - start_row
    if n_rows < 0 or start_row + n_rows > spec.n_rows:
        raise ValueError(f"rows [{start_row}, {start_row + n_rows}) outside [0, {spec.n_rows})")
    return int(start_row), int(n_rows)


def generate(spec: SyntheticSpec, start_row: int = 0, n_rows: int | None = None) -> pl.DataFrame:
    """Rows ``[start_row, start_row + n_rows)`` of the data set described by ``spec``.

    ``n_rows=None`` means up to ``spec.n_rows``. Any chunking gives identical rows.
    """
    start_row, n_rows = _check_range(spec, start_row, n_rows)
    return cast(pl.DataFrame, pl.from_arrow(_table(spec, start_row, n_rows)))  # a Table gives a DataFrame


def iter_frames(
    spec: SyntheticSpec, chunk_rows: int = 1_000_000, start_row: int = 0, stop_row: int | None = None
) -> Iterator[pl.DataFrame]:
    """Yield consecutive chunks of at most ``chunk_rows`` rows (bounded memory)."""
    stop = spec.n_rows if stop_row is None else stop_row
    _check_range(spec, start_row, stop - start_row)
    for s in range(start_row, stop, chunk_rows):
        yield cast(pl.DataFrame, pl.from_arrow(_table(spec, s, min(chunk_rows, stop - s))))


def period_bounds(spec: SyntheticSpec) -> list[tuple[int, int]]:
    """Row range ``[start, stop)`` of every period (day)."""
    P, n = spec.n_periods, spec.n_rows
    starts = [-(-p * n // P) for p in range(P + 1)]
    return [(starts[p], starts[p + 1]) for p in range(P)]


def write(
    spec: SyntheticSpec,
    path: str | Path,
    chunk_rows: int = 1_000_000,
    files: int | Literal["periods"] = 1,
    progress: bool = True,
    *,
    compression: str = "snappy",
) -> list[Path]:
    """Write the data set as parquet, one chunk of ``chunk_rows`` rows at a time.

    * ``files == 1``: a single file at ``path`` (``path/part-00000.parquet`` if ``path``
      is an existing directory);
    * ``files > 1``: ``path/part-00000.parquet ...``, contiguous row ranges of near-equal size;
    * ``files == "periods"``: ``path/period-000.parquet ...``, one file per period.

    Row groups hold ``chunk_rows`` rows (chunks never straddle files). Returns the paths.
    """
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    path = Path(path)
    if files == "periods":
        ranges = period_bounds(spec)
        paths = [path / f"period-{p:03d}.parquet" for p in range(len(ranges))]
    elif isinstance(files, int) and not isinstance(files, bool) and files >= 1:
        n = spec.n_rows
        edges = [i * n // files for i in range(files + 1)]
        ranges = [(edges[i], edges[i + 1]) for i in range(files)]
        if files == 1 and not path.is_dir():
            paths = [path]
        else:
            paths = [path / f"part-{i:05d}.parquet" for i in range(files)]
    else:
        raise ValueError(f"files must be a positive int or 'periods', got {files!r}")

    schema = arrow_schema(spec)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=spec.n_rows, unit="row", unit_scale=True, desc="synthetic")
        except ImportError:  # pragma: no cover
            bar = None
    try:
        for (lo, hi), p in zip(ranges, paths, strict=True):
            p.parent.mkdir(parents=True, exist_ok=True)
            with pq.ParquetWriter(p, schema, compression=compression, write_page_checksum=True) as writer:
                for s in range(lo, hi, chunk_rows):
                    m = min(chunk_rows, hi - s)
                    writer.write_table(_table(spec, s, m), row_group_size=chunk_rows)
                    if bar is not None:
                        bar.update(m)
    finally:
        if bar is not None:
            bar.close()
    return paths


# ----------------------------------------------------------------------------------------
# oracle


def _frame_inputs(spec: SyntheticSpec, frame) -> tuple:
    if isinstance(frame, pa.Table):
        frame = pl.from_arrow(frame)
    elif not isinstance(frame, pl.DataFrame):
        frame = pl.DataFrame(frame)
    user = frame["user_id"].to_numpy().astype(np.int64, copy=False)
    item = frame["item_id"].to_numpy().astype(np.int64, copy=False)
    domain = frame["domain_id"].to_numpy().astype(np.int32, copy=False)
    if "time" in frame.columns:
        period = (frame["time"].to_numpy().astype(np.int64) - T0) // DAY
        np.clip(period, 0, spec.n_periods - 1, out=period)
    else:
        period = np.zeros(len(user), dtype=np.int64)
    if spec.n_dense:
        dense = np.stack([frame[c].to_numpy().astype(np.float32) for c in spec.dense_columns], axis=1)
    else:
        dense = np.zeros((len(user), 0), dtype=np.float32)
    extra = [frame[f"f{j}"].to_numpy().astype(np.int64) for j in range(len(spec.extra_sparse))]
    return user, item, domain, period, dense, extra


def oracle_logits(spec: SyntheticSpec, frame: pl.DataFrame) -> np.ndarray:
    """True logits ``[N, T]`` (float64) of the rows of ``frame`` under ``spec``'s parameters."""
    P = _params(spec)
    return _logits(spec, P, *_frame_inputs(spec, frame)).astype(np.float64)


def oracle_probabilities(spec: SyntheticSpec, frame: pl.DataFrame) -> np.ndarray:
    """True positive probabilities ``[N, T]`` (float64), columns in ``spec.tasks`` order.

    Uses only feature columns of ``frame`` (``user_id``, ``item_id``, ``domain_id``,
    ``time``, ``f*``, ``d*``), so it also works on frames read back from parquet.
    """
    return _sigmoid(oracle_logits(spec, frame)).astype(np.float64)


def bayes_auc(spec: SyntheticSpec, frame: pl.DataFrame, labels: Sequence[str] | None = None) -> dict[str, float]:
    """Expected AUC of the Bayes-optimal scorer on ``frame``'s labels (per task, nulls dropped)."""
    probs = oracle_probabilities(spec, frame)
    out: dict[str, float] = {}
    for t, name in enumerate(labels or spec.tasks):
        y = frame[name].to_numpy()
        ok = ~np.isnan(y.astype(np.float64))
        out[name] = _auc(y[ok].astype(np.int8), probs[ok, t])
    return out


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks for ties
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2.0) / (pos * neg))
