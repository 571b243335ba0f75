"""Calibrate scores into empirical p-values against scores of normal windows.

``p(s) = (1 + #{c >= s}) / (n + 1)`` over the calibration scores ``c`` (held-out normal validation
windows, never seen by the reservoir). An alert fires when ``p < alpha``, which bounds the
false-alarm rate on normal data exchangeable with the calibration set by ``alpha``.

Beyond the largest calibration score the empirical p-value would stay at ``1 / (n + 1)``: every
score past the calibration set would tie, and a set smaller than ``1 / alpha`` could never alert.
With ``tail=True`` it keeps falling there, exponentially (a peaks-over-threshold fit with the
generalized Pareto shape fixed at 0): ``p(s) = exp(-(s - c_max) / beta) / (n + 1)``, where ``beta``
is the mean excess of the top tenth of the calibration scores (at least ``TAIL_MIN`` of them) over
the next one. ``p`` stays continuous and non-increasing, and is unchanged up to ``c_max``; it
never reaches 0 (floored at the smallest normal float, about 2.2e-308).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

__all__ = ["P_FLOOR", "AlertCooldown", "Calibrator", "ChangeMemory", "EntityBaseline", "EntityGroups",
           "InputBaseline", "RangeView", "SeasonalBaseline", "TransitionView", "join_views", "significance",
           "tail_scale"]

#: Fewest calibration scores the exponential tail is fitted to (and the share of the set it takes).
TAIL_MIN = 10
TAIL_SHARE = 0.1
#: The smallest tail probability any view gives (the smallest normal float): as significant as a window can be.
P_FLOOR = float(np.finfo(np.float64).tiny)


def tail_scale(sorted_scores: np.ndarray) -> float:
    """Scale ``beta`` of the exponential upper tail of sorted calibration scores: the mean excess of
    the top ``max(TAIL_MIN, TAIL_SHARE * n)`` scores over the score just below them; 0.0 when the set
    is too small (fewer than two scores) or its top is flat (no tail to extrapolate)."""
    n = len(sorted_scores)
    if n < 2:
        return 0.0
    k = min(max(TAIL_MIN, int(TAIL_SHARE * n)), n - 1)
    beta = float(np.mean(sorted_scores[n - k:] - sorted_scores[n - k - 1]))
    return beta if math.isfinite(beta) and beta > 0.0 else 0.0


class Calibrator:
    def __init__(self, scores: np.ndarray, alpha: float, *, tail: bool = True) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1 or len(scores) == 0 or not np.isfinite(scores).all():
            raise ValueError("calibration needs a non-empty vector of finite scores")
        self.alpha = float(alpha)
        self.sorted = np.sort(scores)
        n = len(self.sorted)
        # Largest count of calibration scores >= s that still gives p < alpha.
        g = math.ceil(alpha * (n + 1) - 1) - 1
        # Settle g with the very float arithmetic of p_values (alpha * (n + 1) may round across an
        # integer), so that "score > threshold" and "p < alpha" always agree.
        while g >= 0 and (1.0 + g) / (n + 1.0) >= alpha:
            g -= 1
        while g < n - 1 and (2.0 + g) / (n + 1.0) < alpha:
            g += 1
        self._max_ge = g
        self.tail_beta = tail_scale(self.sorted) if tail else 0.0

    @property
    def n(self) -> int:
        return len(self.sorted)

    @property
    def min_p(self) -> float:
        """Smallest p-value this calibration set can give; alpha at or below it never alerts (0.0
        with a tail: the p-value falls on past the largest calibration score)."""
        return 0.0 if self.tail_beta > 0.0 else 1.0 / (self.n + 1)

    @property
    def threshold(self) -> float:
        """Scores strictly above this alert (``inf`` when the set is too small for alpha and has no
        tail; with a tail, where the tail's p-value reaches alpha)."""
        if self._max_ge < 0:
            if self.tail_beta <= 0.0 or not 0.0 < self.alpha:
                return math.inf
            return float(self.sorted[-1] + self.tail_beta * math.log(1.0 / (self.alpha * (self.n + 1.0))))
        return float(self.sorted[self.n - self._max_ge - 1])

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        ge = self.n - np.searchsorted(self.sorted, s, side="left")
        p = (1.0 + ge) / (self.n + 1.0)
        if self.tail_beta > 0.0:
            top = self.sorted[-1]
            past = s > top
            if past.any():
                # floored at the smallest normal float: a p-value of exactly 0 would claim certainty
                p[past] = np.maximum(np.exp(-(s[past] - top) / self.tail_beta) / (self.n + 1.0), P_FLOOR)
        return p

    def is_alert(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p) < self.alpha


def join_views(q_a: np.ndarray | None, q_b: np.ndarray, share_b: float = 0.5) -> np.ndarray:
    """Two tail probabilities of one window from different views, joined by a weighted Bonferroni:
    ``min(1, q_a / (1 - share_b), q_b / share_b)``, so the more surprised view decides at its
    share of the test; ``q_b`` alone when ``q_a`` is None. Equal shares: twice the smaller."""
    if q_a is None:
        return q_b
    return np.minimum(1.0, np.minimum(q_a / (1.0 - share_b), q_b / share_b))


def significance(p: np.ndarray, entity_p: np.ndarray | None, rule: str = "both", *,
                 input_p: np.ndarray | None = None) -> np.ndarray:
    """What an alert is decided on (``significance < alpha``): a window's calibrated p-value,
    tempered by its entity-baseline tail probability ``entity_p`` (when on) by ``rule``, then
    combined with its input-baseline tail probability ``input_p`` (when on).

    ``rule`` keeps ``p <= result``, so without an input baseline alerts are always a subset of the
    calibrated alerts, never more false alarms than the p-value alone gives:

    * ``"both"``: ``max(p, q)``; the entity must find the window surprising too. A lasting incident
      (or drift) stops alerting once the entity's baseline has adapted to it.
    * ``"geometric"``: ``max(p, sqrt(p * q))``; an entity's baseline softens the p-value halfway on
      a log scale. A window far beyond every calibration score keeps alerting after its entity has
      adapted (an incident that lasts, but also a drift far from the training data), one barely
      past the threshold needs its entity to find it unusual too.

    With an input baseline the result is the geometric mean of that and ``input_p``: two
    moderately surprising views make an alert, as does one overwhelming one (a raw value far
    outside its entity's recent range that the model maps close to normal windows, say).
    """
    if entity_p is None:
        sig = p
    elif rule == "both":
        sig = np.maximum(p, entity_p)
    elif rule == "geometric":
        sig = np.maximum(p, np.sqrt(p * entity_p))
    else:
        raise ValueError(f"unknown entity baseline rule {rule!r} (expected 'both' or 'geometric')")
    return sig if input_p is None else np.sqrt(sig * input_p)


class _EntityRows:
    """One row of a float state array per entity, at most ``max_entities`` (the least recently seen
    are forgotten first; an entity seen again restarts from the initial row)."""

    def __init__(self, init: np.ndarray, max_entities: int) -> None:
        self.init = np.asarray(init, dtype=np.float64)
        self.max_entities = max_entities
        self.slot: dict[str, int] = {}  # entity -> row of ``state`` (insertion order = recency)
        self.state = np.zeros((0, len(self.init)))
        self._free: list[int] = []

    def rows(self, keys: list[str]) -> np.ndarray:
        slot = self.slot
        out = np.empty(len(keys), dtype=np.int64)
        new: list[int] = []
        for i, key in enumerate(keys):
            j = slot.pop(key, None)  # re-inserted below: the dict's order is the recency order
            if j is None:
                new.append(i)
            else:
                slot[key] = j
                out[i] = j
        if new:
            # Forget the least recently seen, never an entity of this batch (those were re-inserted
            # last): a batch with more entities than the bound overflows it until the next one.
            evictable = len(slot) - (len(keys) - len(new))
            while len(slot) + len(new) > self.max_entities and evictable > 0:
                self._free.append(slot.pop(next(iter(slot))))
                evictable -= 1
            grow = len(new) - len(self._free)
            if grow > 0:
                start = len(self.state)
                self.state = np.concatenate([self.state, np.zeros((grow, len(self.init)))])
                self._free.extend(range(start, start + grow))
            for i in new:
                j = self._free.pop()
                slot[keys[i]] = j
                out[i] = j
                self.state[j] = self.init
        return out

    def by_rank(self, entity: np.ndarray | EntityGroups) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The windows of a batch (in stream order) in steps of at most one per entity, in order:
        each step's window indices and their state rows, to read and update together. New
        entities may reallocate ``state``: read it inside the loop. ``entity``: each window's key,
        or the batch's :class:`EntityGroups` (grouped once for every view of the batch)."""
        groups = EntityGroups.of(entity)
        if len(groups) == 0:
            return
        slots = self.rows(groups.keys)[groups.inv]
        for rows in groups.steps:
            yield rows, slots[rows]


class EntityGroups:
    """A batch's windows grouped by entity, once for all the per-entity views that judge it: the
    distinct keys, each window's key index, and the steps of :meth:`_EntityRows.by_rank` (step r
    holds each entity's r-th window of the batch, in stream order)."""

    def __init__(self, entity: np.ndarray) -> None:
        n = len(entity)
        keys, inv = np.unique(np.asarray(entity).astype(str), return_inverse=True)
        self.keys: list[str] = keys.tolist()
        self.inv = inv.reshape(n)
        # each window's rank among its entity's windows of the batch
        order = np.argsort(self.inv, kind="stable")
        first = np.r_[0, np.flatnonzero(np.diff(self.inv[order])) + 1]
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
        by_rank = np.argsort(rank, kind="stable")  # (stream order within a rank)
        self.steps: list[np.ndarray] = np.split(by_rank, np.cumsum(np.bincount(rank))[:-1]) if n else []

    def __len__(self) -> int:
        return len(self.inv)

    @classmethod
    def of(cls, entity: np.ndarray | EntityGroups) -> EntityGroups:
        return entity if isinstance(entity, cls) else cls(entity)


class _PerEntity:
    """Per-entity state kept in an :class:`_EntityRows` (``self._rows``)."""

    _rows: _EntityRows

    def __len__(self) -> int:
        return len(self._rows.slot)


class EntityBaseline(_PerEntity):
    """Per-entity adaptive calibration: how surprising a window's score is *for its entity*, given
    that entity's own recent scores.

    Per entity: a short exponential average ``a`` of ``log1p(score)`` (span ``short`` windows, to
    smooth single-window noise) and a long exponential mean and variance of ``a`` (span
    ``horizon``). A window's tail probability is the normal upper tail of ``(a - mean) / std``
    taken *before* the window updates its entity's baseline. A new entity starts from the
    calibration scores (held-out normal windows), so it is judged against normal behaviour at once
    and then against its own. A lasting change (a level shift, a new steady load) is surprising at
    its onset and becomes the entity's new normal over about ``horizon`` windows. The detector
    combines this tail probability with the calibrated p-value (:func:`significance`): with
    ``"both"`` (default) a change alerts at its onset only; with ``"geometric"`` a window only mildly
    past the threshold is dropped once its entity has adapted, one far beyond every calibration
    score keeps alerting.

    State is three numbers per entity; at most ``max_entities`` are kept (the least recently seen
    are forgotten first and restart from the calibration prior).
    """

    def __init__(self, calibration_scores: np.ndarray, *, horizon: int, short: int = 3,
                 max_entities: int = 200_000) -> None:
        if horizon < 2 or short < 1 or max_entities < 1:
            raise ValueError("entity baseline: horizon >= 2, short >= 1 and max_entities >= 1 are needed")
        x = np.log1p(np.maximum(np.asarray(calibration_scores, dtype=np.float64), 0.0))
        self.prior_mean = float(x.mean()) if len(x) else 0.0
        # The spread of single windows: an upper bound of the spread of their short averages (the
        # baseline then learns the entity's own); the floor keeps a constant set from dividing by 0.
        self.prior_var = max(float(x.var()), 1e-6)
        self.var_floor = self.prior_var * 1e-2
        self.b_short = 2.0 / (short + 1.0)
        self.b_long = 2.0 / (horizon + 1.0)
        # per entity: short average, long mean, long variance
        self._rows = _EntityRows(np.array([self.prior_mean, self.prior_mean, self.prior_var]), max_entities)

    def update(self, entity: np.ndarray | EntityGroups, score: np.ndarray) -> np.ndarray:
        """Tail probabilities of a batch of windows (in stream order), updating the baselines."""
        score = np.asarray(score, dtype=np.float64)
        n = len(score)
        q = np.ones(n)
        x = np.log1p(np.maximum(score, 0.0))
        for rows, s in self._rows.by_rank(entity):
            st = self._rows.state
            a = st[s, 0] + self.b_short * (x[rows] - st[s, 0])
            mean, var = st[s, 1], st[s, 2]
            z = (a - mean) / np.sqrt(np.maximum(var, self.var_floor))
            q[rows] = _normal_upper_tail(z)
            d = a - mean
            st[s, 0] = a
            st[s, 1] = mean + self.b_long * d
            st[s, 2] = (1.0 - self.b_long) * (var + self.b_long * d * d)
        return q


def _input_prior(who: str, prior_mean: np.ndarray, prior_var: np.ndarray, *, horizon: int, floor_share: float,
                 max_entities: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked prior mean and variance of raw features, and their variance floor (``floor_share``
    times the training variance, or for a feature constant in training times ``max(mean^2, 1)``)."""
    prior_mean = np.asarray(prior_mean, dtype=np.float64)
    prior_var = np.asarray(prior_var, dtype=np.float64)
    if (prior_mean.ndim != 1 or prior_mean.shape != prior_var.shape or not len(prior_mean)
            or not np.isfinite(prior_mean).all() or not np.isfinite(prior_var).all() or (prior_var < 0).any()):
        raise ValueError(f"{who}: prior mean and variance must be finite vectors of one length, variances >= 0")
    if horizon < 2 or floor_share <= 0 or max_entities < 1:
        raise ValueError(f"{who}: horizon >= 2, floor_share > 0 and max_entities >= 1 are needed")
    return prior_mean, prior_var, floor_share * np.where(prior_var > 0, prior_var, np.maximum(prior_mean**2, 1.0))


def _raw_windows(who: str, x: np.ndarray, n_features: int) -> np.ndarray:
    """A batch of raw windows as float rows of ``n_features`` values, or a clear error."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise ValueError(f"{who}: expected {n_features} features, got shape {x.shape}")
    return x


def _range_prior(who: str, prior_min: np.ndarray, prior_max: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A training range (each feature's smallest and largest value) as float vectors, or a clear error."""
    prior_min = np.asarray(prior_min, dtype=np.float64)
    prior_max = np.asarray(prior_max, dtype=np.float64)
    if (prior_min.ndim != 1 or prior_min.shape != prior_max.shape or not len(prior_min)
            or not np.isfinite(prior_min).all() or not np.isfinite(prior_max).all()
            or (prior_min > prior_max).any()):
        raise ValueError(f"{who}: prior min and max must be finite vectors of one length, min <= max")
    return prior_min, prior_max


def _max_z_tail(z: np.ndarray) -> np.ndarray:
    """Tail probability of each row's most extreme |z| (two-sided normal), times the number of
    features (Bonferroni), floored like the calibrated p-values (the far tail underflows to 0 past
    z ~ 38) and capped at 1."""
    return np.clip(z.shape[1] * 2.0 * _normal_upper_tail(z.max(axis=1)), P_FLOOR, 1.0)


class InputBaseline(_PerEntity):
    """Per-entity running mean and variance of each raw window feature: how far a window's
    *inputs* are from its entity's recent inputs, whatever the model makes of them.

    Per entity and feature, an exponential mean and variance over about ``horizon`` windows,
    started from the training windows' mean and variance (``prior_mean``, ``prior_var``). A
    window's tail probability is the two-sided normal tail of its most extreme feature's z-score,
    taken *before* the window updates its entity, times the number of features (Bonferroni),
    capped at 1 and floored at the smallest normal float. Raw values, not the model's normalized
    inputs: log compression and clipping would shrink exactly the excursions this looks for. A
    feature's variance never counts as less than ``floor_share`` times its training variance (or,
    for a feature constant in training, ``floor_share`` times ``max(mean^2, 1)``), so a feature that
    was flat for a while does not turn its first small move into a certainty.
    """

    def __init__(self, prior_mean: np.ndarray, prior_var: np.ndarray, *, horizon: int,
                 floor_share: float = 1e-2, max_entities: int = 200_000) -> None:
        prior_mean, prior_var, self.var_floor = _input_prior("input baseline", prior_mean, prior_var, horizon=horizon,
                                                             floor_share=floor_share, max_entities=max_entities)
        self.n_features = len(prior_mean)
        self.b = 2.0 / (horizon + 1.0)
        # per entity: F means then F variances
        self._rows = _EntityRows(np.r_[prior_mean, prior_var], max_entities)

    def update(self, entity: np.ndarray | EntityGroups, x: np.ndarray, judge: np.ndarray | None = None) -> np.ndarray:
        """Tail probabilities of a batch of raw windows (rows in stream order), updating each
        entity's running statistics. A non-finite value counts as its entity's mean. With
        ``judge`` (same shape), the tail probabilities are those of ``judge``'s values while the
        statistics still learn from ``x`` (the change view judges a change's excess over its
        entity's recent largest change: :class:`ChangeMemory`)."""
        x = _raw_windows("input baseline", x, self.n_features)
        if judge is not None:
            judge = _raw_windows("input baseline", judge, self.n_features)
            if len(judge) != len(x):
                raise ValueError(f"input baseline: judged values of shape {judge.shape} for windows of shape {x.shape}")
        f = self.n_features
        q = np.ones(len(x))
        for rows, s in self._rows.by_rank(entity):
            st = self._rows.state
            mean, var = st[s, :f], st[s, f:]
            d = np.where(np.isfinite(x[rows]), x[rows] - mean, 0.0)
            dj = d if judge is None else np.where(np.isfinite(judge[rows]), judge[rows] - mean, 0.0)
            q[rows] = _max_z_tail(np.abs(dj) / np.sqrt(np.maximum(var, self.var_floor)))
            st[s, :f] = mean + self.b * d
            st[s, f:] = (1.0 - self.b) * (var + self.b * d * d)
        return q


class ChangeMemory(_PerEntity):
    """What a change view should not call new: a change no larger than one its entity made lately.

    Event time is cut into blocks of ``span_s`` seconds; per entity and feature this keeps the
    largest absolute change of the current block and of the one before it, so a window is compared
    with the largest change of between one and two spans back (a block with no window of the
    entity counts as no change). :meth:`excess` gives each change's excess over that recent
    largest one, ``sign(d) * max(|d| - recent, 0)``, and then remembers the change. With a span of
    a day, a step that recurs every day (a scheduled job, business hours) has no excess after its
    first day, while a jump larger than any of the last day's keeps what exceeds them. A
    non-finite change stays non-finite and is not remembered. At most ``max_entities`` entities are
    kept; the least recently seen are forgotten first (and start with no memory)."""

    def __init__(self, n_features: int, *, span_s: float, max_entities: int = 200_000) -> None:
        if n_features < 1 or not span_s > 0 or not math.isfinite(span_s) or max_entities < 1:
            raise ValueError("change memory: n_features >= 1, a finite span_s > 0 and max_entities >= 1 are needed")
        self.n_features = int(n_features)
        self.span_ms = float(span_s) * 1000.0
        # per entity: the current block's number (NaN: none yet), F largest changes in it, F in the block before
        self._rows = _EntityRows(np.r_[np.nan, np.zeros(2 * self.n_features)], max_entities)

    def excess(self, entity: np.ndarray | EntityGroups, t_ms: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Each change's excess over its entity's largest recent change (rows in stream order,
        ``t_ms`` each window's newest event time), remembering the changes as it goes."""
        d = _raw_windows("change memory", d, self.n_features)
        block = np.floor(np.asarray(t_ms, dtype=np.float64) / self.span_ms)
        if block.shape != (len(d),):
            raise ValueError(f"change memory: {len(d)} changes but times of shape {block.shape}")
        f = self.n_features
        out = np.empty_like(d)
        for rows, s in self._rows.by_rank(entity):
            st = self._rows.state
            step = (block[rows] - st[s, 0])[:, None]  # NaN for an entity's first window
            cur, prev = st[s, 1:1 + f], st[s, 1 + f:]
            moved = ~(step <= 0)  # a new block (an out-of-order time stays in the current one)
            prev = np.where(moved, np.where(step == 1, cur, 0.0), prev)
            cur = np.where(moved, 0.0, cur)
            a = np.abs(d[rows])
            out[rows] = np.where(np.isfinite(a), np.sign(d[rows]) * np.maximum(a - np.maximum(cur, prev), 0.0), d[rows])
            st[s, 0] = np.where(moved[:, 0], block[rows], st[s, 0])
            st[s, 1:1 + f] = np.where(np.isfinite(a), np.maximum(cur, a), cur)
            st[s, 1 + f:] = prev
        return out


class RangeView(_PerEntity):
    """Values beyond everything their entity has shown: per entity and feature, the smallest and
    largest raw value seen so far, started from the training windows' range (``prior_min``,
    ``prior_max``). A value more than ``tolerance`` times the range's width above its largest (or
    below its smallest) is a *range break*; then the range takes the value in, so a level shift
    breaks at its onset only, and a slow drift, whose steps stay within the tolerance, never does.
    A feature constant so far has width 0: any other value breaks. Non-finite values neither break
    nor move the range. With ``warmup`` > 0 an entity's breaks count only from its ``warmup``-th
    window on (before, they still widen the range): a range learned from a short training stretch
    is still being widened by the stream's ordinary extremes for a while. At most ``max_entities``
    entities are kept (the least recently seen are forgotten first and restart from the training
    range and the warm-up)."""

    def __init__(self, prior_min: np.ndarray, prior_max: np.ndarray, *, tolerance: float, warmup: int = 0,
                 max_entities: int = 200_000) -> None:
        prior_min, prior_max = _range_prior("range view", prior_min, prior_max)
        if not tolerance >= 0 or not math.isfinite(tolerance) or warmup < 0 or max_entities < 1:
            raise ValueError("range view: a finite tolerance >= 0, warmup >= 0 and max_entities >= 1 are needed")
        self.n_features = len(prior_min)
        self.tolerance = float(tolerance)
        self.warmup = int(warmup)
        # per entity: F smallest then F largest values, then the windows it has shown
        self._rows = _EntityRows(np.r_[prior_min, prior_max, 0.0], max_entities)

    def update(self, entity: np.ndarray | EntityGroups, x: np.ndarray) -> np.ndarray:
        """Whether each raw window (rows in stream order) breaks its entity's range in any
        feature, taking its values into the range."""
        x = _raw_windows("range view", x, self.n_features)
        f = self.n_features
        out = np.zeros(len(x), dtype=bool)
        for rows, s in self._rows.by_rank(entity):
            st = self._rows.state
            lo, hi = st[s, :f], st[s, f:2 * f]
            v = x[rows]
            margin = self.tolerance * (hi - lo)
            seen = st[s, 2 * f]
            out[rows] = ((v > hi + margin) | (v < lo - margin)).any(axis=1) & (seen >= self.warmup)  # (NaN: False)
            ok = np.isfinite(v)
            st[s, :f] = np.where(ok, np.minimum(lo, v), lo)
            st[s, f:2 * f] = np.where(ok, np.maximum(hi, v), hi)
            st[s, 2 * f] = seen + 1
        return out


class TransitionView(_PerEntity):
    """Steps an entity has never made: each new value and the one before it (``x[:, new]``,
    ``x[:, prev]``: :func:`streamer.window.change_columns`) are cut into ``levels`` equal levels of
    the training windows' range (``prior_min``, ``prior_max``), plus one below and one above it; a
    window whose step from its previous level to its new one, in any feature, its entity has never
    made before is a *new transition*. Each entity learns its transitions from its own windows,
    from its first on; with ``warmup`` > 0 they count only from its ``warmup``-th window on (before
    that the entity is still learning which steps are ordinary). A stream that moves in a way it
    never has (a jump across levels it used to cross gradually, a climb past its range) shows a
    new transition at the onset, and a repeating pattern, however irregular its values, none.
    Non-finite values neither count nor teach. At most ``max_entities`` entities are kept (the least
    recently seen are forgotten first and start learning again)."""

    def __init__(self, prior_min: np.ndarray, prior_max: np.ndarray, *, levels: int, warmup: int = 0,
                 max_entities: int = 200_000) -> None:
        prior_min, prior_max = _range_prior("transition view", prior_min, prior_max)
        if levels < 1 or warmup < 0 or max_entities < 1:
            raise ValueError("transition view: levels >= 1, warmup >= 0 and max_entities >= 1 are needed")
        self.n_features = len(prior_min)
        self.levels = int(levels)
        self.warmup = int(warmup)
        self.lo, self.hi = prior_min, prior_max
        # a feature constant in training: one level for its value, below and above it the others
        self.width = np.where(prior_max > prior_min, prior_max - prior_min, np.inf)
        self._cells = (self.levels + 2) ** 2  # (from, to) pairs of a feature's levels, below and above included
        # per entity: one flag per feature and (from, to) pair (made before), then the windows it has shown
        self._rows = _EntityRows(np.zeros(self.n_features * self._cells + 1), max_entities)

    def level(self, v: np.ndarray) -> np.ndarray:
        """Each value's level: 0 below the training range, 1..levels inside it, levels + 1 above
        (the range's top value in the top level)."""
        inside = np.minimum(np.floor((v - self.lo) / self.width * self.levels), self.levels - 1)
        return (np.where(v < self.lo, -1, np.where(v > self.hi, self.levels, inside)) + 1).astype(np.int64)

    def update(self, entity: np.ndarray | EntityGroups, new: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Whether each window (rows in stream order) makes a transition its entity never made
        before, in any feature (``new``: each feature's new value, ``prev``: the value before it),
        then learns its transitions."""
        new = _raw_windows("transition view", new, self.n_features)
        prev = _raw_windows("transition view", prev, self.n_features)
        if new.shape != prev.shape:
            raise ValueError(f"transition view: new values {new.shape} and previous ones {prev.shape} differ")
        ok = np.isfinite(new) & np.isfinite(prev)
        b = self.levels + 2
        # (non-finite values take a placeholder level: ``ok`` keeps them from counting or teaching)
        cell = (self.level(np.where(ok, prev, 0.0)) * b + self.level(np.where(ok, new, 0.0))
                + np.arange(self.n_features) * self._cells)
        seen_col = self.n_features * self._cells
        out = np.zeros(len(new), dtype=bool)
        for rows, s in self._rows.by_rank(entity):
            st = self._rows.state
            c, good = cell[rows], ok[rows]
            made = st[s[:, None], c] > 0
            out[rows] = (good & ~made).any(axis=1) & (st[s, seen_col] >= self.warmup)
            r, f = np.nonzero(good)
            st[s[r], c[r, f]] = 1.0
            st[s, seen_col] += 1
        return out


class SeasonalBaseline(_PerEntity):
    """A window's raw inputs against its entity's inputs *at the same phase of a period* (time of
    day, of week, ...): a value normal at noon but not at midnight stands out, which a baseline
    over all recent values cannot see.

    The period (``period_s`` seconds of event time) is cut into ``buckets`` equal phases; a window
    belongs to the phase of its newest event's time. Each (entity, phase) pair keeps an exponential
    mean of each feature over about ``horizon`` windows of that phase; the spread around those
    means is pooled over all phases of the entity (an exponential mean of the squared deviations
    over about ``horizon * buckets`` windows): a phase sees few windows a day, too few to estimate a
    spread of its own without many false alarms on a noisy series. Both start from the training
    windows' mean and variance (the variance with the daily cycle in it: permissive until the
    entity's own deviations have been seen). An anomaly moves its phase's mean like any window,
    so a spike can echo as a false alarm at the same phase one period later; with ``clip`` > 0 both
    learn from deviations clipped at that many spreads instead, which stops the echo but also
    slows the learning of a lasting change. A window's tail probability is, as in
    :class:`InputBaseline`, the two-sided normal tail of its most extreme feature's z-score, times
    the number of features, taken before the window updates its entity, with the same variance
    floor. At most ``max_entities`` entities (and ``buckets`` times as many phases) are kept; the
    least recently seen are forgotten first."""

    def __init__(self, prior_mean: np.ndarray, prior_var: np.ndarray, *, period_s: float, buckets: int,
                 horizon: int, clip: float = 0.0, floor_share: float = 1e-2, max_entities: int = 200_000) -> None:
        if not period_s > 0 or buckets < 1 or not clip >= 0:
            raise ValueError("seasonal baseline: period_s > 0, buckets >= 1 and clip >= 0 are needed")
        self.clip = float(clip)
        prior_mean, prior_var, self.var_floor = _input_prior("seasonal baseline", prior_mean, prior_var,
                                                             horizon=horizon, floor_share=floor_share,
                                                             max_entities=max_entities)
        self.n_features = len(prior_mean)
        self.period_ms = float(period_s) * 1000.0
        self.buckets = int(buckets)
        self.b = 2.0 / (horizon + 1.0)
        self.b_var = 2.0 / (horizon * buckets + 1.0)
        self._rows = _EntityRows(prior_var, max_entities)  # per entity: the pooled variances
        self._means = _EntityRows(prior_mean, max_entities * self.buckets)  # per entity and phase: means

    def phase(self, t_ms: np.ndarray) -> np.ndarray:
        """Phase bucket (0 .. buckets-1) of each event time (epoch milliseconds)."""
        frac = np.mod(np.asarray(t_ms, dtype=np.float64), self.period_ms) / self.period_ms
        return np.minimum((frac * self.buckets).astype(np.int64), self.buckets - 1)

    def update(self, entity: np.ndarray | EntityGroups, t_ms: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Tail probabilities of a batch of raw windows (rows in stream order) against their
        entity's same-phase means and pooled spread, which each then updates. A non-finite value
        counts as its phase's mean."""
        x = _raw_windows("seasonal baseline", x, self.n_features)
        q = np.ones(len(x))
        if len(x) == 0:
            return q
        groups = EntityGroups.of(entity)
        # (entity, phase) pairs as integer codes; key strings only for the distinct ones
        codes, inv = np.unique(groups.inv * self.buckets + self.phase(t_ms), return_inverse=True)
        keys = [f"{groups.keys[c // self.buckets]}\x1f{c % self.buckets}" for c in codes.tolist()]
        m_slot = self._means.rows(keys)[inv.reshape(len(x))]
        means = self._means.state
        # one window per entity per step: its phase's mean and its entity's spread, updated in order
        for rows, s in self._rows.by_rank(groups):
            st, ms = self._rows.state, m_slot[rows]
            mean, var = means[ms], st[s]
            d = np.where(np.isfinite(x[rows]), x[rows] - mean, 0.0)
            sd = np.sqrt(np.maximum(var, self.var_floor))
            q[rows] = _max_z_tail(np.abs(d) / sd)
            if self.clip:  # a spike then barely moves its phase's mean: no echo a period later
                d = np.clip(d, -self.clip * sd, self.clip * sd)
            means[ms] = mean + self.b * d
            st[s] = var + self.b_var * (d * d - var)
        return q


class AlertCooldown(_PerEntity):
    """Incident grouping per entity, by two rules (either, or both):

    * ``windows`` (the cooldown): a window *repeats* its entity's open incident when one of that
      entity's previous ``windows`` windows was at least as significant (a significance at most its
      own). Only the others alert: the onset of an incident, and each escalation past its worst
      window so far; a lasting anomaly does not alert on every window it spans. This rule does not
      depend on alpha, so a ranking of the windows that are not repeats (and any threshold on it)
      groups the same way.
    * ``gap`` (incident gap): a window also repeats when its entity had a *significant* window
      (significance below ``alpha``, alerting or not) among its previous ``gap`` windows: significant
      windows closer than that form one incident, which alerts at its first window only, however
      much worse it gets (no escalation alerts).

    State: the last ``windows`` significances of each entity and the distance to its last significant
    window, at most ``max_entities`` entities (the least recently seen are forgotten first).
    """

    def __init__(self, windows: int, *, gap: int = 0, alpha: float = 0.0, max_entities: int = 200_000) -> None:
        if windows < 0 or gap < 0 or windows + gap < 1 or max_entities < 1:
            raise ValueError("alert cooldown: windows >= 0 and gap >= 0, one of them >= 1, and max_entities >= 1 "
                             "are needed")
        if gap and not 0.0 < alpha < 1.0:
            raise ValueError(f"alert cooldown: an incident gap needs the alert level alpha in (0, 1), got {alpha}")
        self.windows = windows
        self.gap = gap
        self.alpha = alpha
        # per entity: the last `windows` significances (a ring, +inf where none yet), its cursor, then
        # how many windows ago its last significant window was (+inf: none yet)
        self._rows = _EntityRows(np.r_[np.full(windows, np.inf), 0.0, np.inf], max_entities)

    def update(self, entity: np.ndarray | EntityGroups, sig: np.ndarray) -> np.ndarray:
        """Which windows of a batch (in stream order) repeat an open incident of their entity."""
        sig = np.asarray(sig, dtype=np.float64)
        repeat = np.zeros(len(sig), dtype=bool)
        w = self.windows
        for rows, s in self._rows.by_rank(entity):
            st = self._rows.state
            if w:
                repeat[rows] = st[s, :w].min(axis=1) <= sig[rows]
                cursor = st[s, w].astype(np.int64)
                st[s, cursor] = sig[rows]
                st[s, w] = (cursor + 1) % w
            if self.gap:
                repeat[rows] |= st[s, w + 1] <= self.gap
                st[s, w + 1] = np.where(sig[rows] < self.alpha, 1.0, st[s, w + 1] + 1.0)
        return repeat


def _normal_upper_tail(z: np.ndarray) -> np.ndarray:
    """P(Z > z) for a standard normal Z (erfc keeps the far tail accurate)."""
    from scipy.special import erfc

    return 0.5 * erfc(np.asarray(z, dtype=np.float64) / math.sqrt(2.0))
