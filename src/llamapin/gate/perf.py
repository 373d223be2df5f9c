"""Is the candidate slower than the baseline? A grouped sequential test on paired
log-ratios, with the engine process as a random effect.

The test runs in *rounds*. Each round is a fresh candidate process and a fresh
baseline process (started anew, so memory layout, core placement and warm-up
state differ from round to round) and ``pairs_per_round`` pairs of timed
requests, interleaved in alternating order; ``x = log(candidate / baseline)``.
A pair in round ``r`` is ``x = d + b_r + e``: ``d`` the true log-ratio, ``b_r``
the difference the two processes of that round make for as long as they live
(the random effect), ``e`` the per-request noise.

The estimate of ``d`` is the mean of the round means, and its variance counts
both components: the larger of (a) the spread of the round means themselves
(``R - 1`` degrees of freedom) and (b) the model ``(process_sd^2 + s_w^2 / k) / R``
with ``s_w`` the pooled within-round standard deviation (floored at
``sigma_floor``) and ``process_sd`` a floor for the process effect, for the
rounds too few to measure it (degrees of freedom of ``s_w``). Bounds use
Student's t quantile, computed exactly (``mpmath``'s regularized incomplete beta).

Three answers, with an indifference zone ``[fail_margin, tolerance]``:

* **fail** (slower): the one-sided upper confidence bound on the ratio lies
  below ``1 - fail_margin``: the data exclude a slowdown smaller than
  ``fail_margin``. At most ``alpha`` whenever the true slowdown is smaller.
* **pass** (same): the lower bound lies above ``1 - tolerance``: the data
  exclude a slowdown of ``tolerance`` or more. At most ``beta`` whenever the
  true slowdown is that large.
* otherwise **continue** (unknown: one more round), and when the rounds or the
  time budget run out, **inconclusive**, which is never a pass.

The test looks after every round from ``min_pairs`` on; each look spends an
equal share of ``alpha`` and ``beta`` (Bonferroni over the planned looks), so
the error rates hold however early it stops, at every sample size, without a
plug-in standard deviation treated as known. ``first_look_share`` spends that
share of ``alpha`` at the first look instead and the rest evenly over the later
ones: still at most ``alpha`` in all, an earlier fail for a clear slowdown, a
later one (or none) for a slowdown near the tolerance (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["pass", "fail", "inconclusive", "continue"]


@dataclass(frozen=True)
class SprtParams:
    """The decision rule's parameters (the name is kept for the config's sake)."""

    tolerance: float = 0.10
    fail_margin: float = 0.03
    alpha: float = 0.01
    beta: float = 0.05
    min_pairs: int = 8
    max_pairs: int = 40
    pairs_per_round: int = 4
    process_sd: float = 0.02
    sigma_floor: float = 0.03
    first_look_share: float | None = None  # of alpha at the first look; None: 1 / looks

    @property
    def round_size(self) -> int:
        """Pairs per process pair, never more than max_pairs."""
        return min(self.pairs_per_round, self.max_pairs)

    @property
    def min_rounds(self) -> int:
        return max(1, math.ceil(self.min_pairs / self.round_size))

    @property
    def max_rounds(self) -> int:
        return max(self.min_rounds, self.max_pairs // self.round_size)

    @property
    def looks(self) -> int:
        """How many times the rule may decide: once per round from min_rounds on."""
        return self.max_rounds - self.min_rounds + 1

    def look_alpha(self, rounds: int) -> float:
        """What the look after ``rounds`` rounds spends of alpha: alpha / looks at each,
        or ``first_look_share`` of it at the first look and the rest evenly over the later
        ones. Either way the looks' shares add up to alpha (Bonferroni)."""
        if self.first_look_share is None or self.looks == 1:
            return self.alpha / self.looks
        if rounds <= self.min_rounds:
            return self.alpha * self.first_look_share
        return self.alpha * (1 - self.first_look_share) / (self.looks - 1)

    def zone(self) -> str:
        return (
            f"fail only if a slowdown under {self.fail_margin:.0%} is excluded, "
            f"pass only if one of {self.tolerance:.0%} or more is excluded"
        )


@dataclass(frozen=True)
class MetricDecision:
    metric: str
    outcome: Outcome
    pairs: int
    ratio: float
    ci_low: float
    ci_high: float
    rounds: int = 1
    se: float = 0.0

    def describe(self) -> str:
        return (
            f"{self.metric}: candidate/baseline {self.ratio:.3f} "
            f"(bounds {self.ci_low:.3f}-{self.ci_high:.3f}, "
            f"{self.pairs} pairs in {self.rounds} process pairs)"
        )


def log_ratios(cand: list[float], base: list[float]) -> list[float]:
    return [math.log(c / b) for c, b in zip(cand, base, strict=True) if c > 0 and b > 0]


T_DF_MAX = 10_000.0
"""Above this many degrees of freedom the quantile of T_DF_MAX is used: it is larger
than the exact one (t quantiles fall as df grows) by less than 1e-4, so a bound
is never narrower than the exact one. The rule itself never needs more than
``max_pairs`` degrees of freedom."""


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile ``t`` with ``P(T <= t) = p`` for ``p`` in (0.5, 1), exactly:
    ``P(|T| <= t) = I_y(1/2, df/2)`` with ``y = t^2 / (df + t^2)``, solved for ``y``."""
    if not 0.5 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df > 0, got p={p}, df={df}")
    import mpmath  # only when a perf test runs: keeps the CLI's start fast

    df = min(df, T_DF_MAX)
    half = mpmath.mpf(df) / 2
    target = 2 * mpmath.mpf(p) - 1

    def central(y: mpmath.mpf) -> mpmath.mpf:
        return mpmath.betainc(0.5, half, 0, y, regularized=True) - target

    y = mpmath.findroot(central, (mpmath.mpf(0), mpmath.mpf(1)), solver="illinois")
    return float(mpmath.sqrt(df * y / (1 - y)))


def _beta_quantile(q: float, a: float, b: float) -> float:
    import mpmath

    def cdf(x: mpmath.mpf) -> mpmath.mpf:
        return mpmath.betainc(a, b, 0, x, regularized=True) - q

    return float(mpmath.findroot(cdf, (mpmath.mpf(0), mpmath.mpf(1)), solver="illinois"))


def clopper_pearson(k: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) confidence interval for a binomial rate k/n."""
    tail = (1 - conf) / 2
    low = 0.0 if k == 0 else _beta_quantile(tail, k, n - k + 1)
    high = 1.0 if k == n else _beta_quantile(1 - tail, k + 1, n - k)
    return low, high


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float
    df: float
    rounds: int
    pairs: int


def estimate(groups: list[list[float]], p: SprtParams) -> Estimate:
    """Mean log-ratio over rounds and its standard error with the process effect in it."""
    # plain float sums: this runs once per round, and thousands of times in the simulations
    groups = [g for g in groups if g]
    if not groups:  # no usable pair (an engine reported no throughput): no information
        return Estimate(0.0, math.inf, 1.0, 0, 0)
    means = [math.fsum(g) / len(g) for g in groups]
    rounds = len(means)
    pairs = sum(len(g) for g in groups)
    mean = math.fsum(means) / rounds
    within_df = pairs - rounds
    within_ss = math.fsum((x - m) ** 2 for g, m in zip(groups, means, strict=True) for x in g)
    s_w = math.sqrt(within_ss / within_df) if within_df else 0.0
    s_w = max(s_w, p.sigma_floor)
    model = math.fsum(p.process_sd**2 + s_w**2 / len(g) for g in groups) / rounds**2
    # With no within-round replication the floor's own df stand in (one per pair).
    se, df = math.sqrt(model), float(max(within_df, 1))
    if rounds > 1:
        empirical = math.fsum((m - mean) ** 2 for m in means) / (rounds - 1) / rounds
        if empirical > model:
            se, df = math.sqrt(empirical), float(rounds - 1)
    return Estimate(mean, se, df, rounds, pairs)


def decide(
    metric: str, groups: list[list[float]], p: SprtParams, *, final: bool = False
) -> MetricDecision:
    """The decision after these rounds (lists of log-ratios, one list per process
    pair); ``final`` turns 'continue' into 'inconclusive'."""
    est = estimate(groups, p)
    # the look is the number of rounds run, a round with no usable pair included
    fail_level = 1 - p.look_alpha(len(groups))
    pass_level = 1 - p.beta / p.looks
    upper = est.mean + t_quantile(fail_level, est.df) * est.se
    lower = est.mean - t_quantile(pass_level, est.df) * est.se
    outcome: Outcome = "continue"
    if est.rounds >= p.min_rounds and est.pairs >= p.min_pairs:
        if upper < math.log(1 - p.fail_margin):
            outcome = "fail"
        elif lower > math.log(1 - p.tolerance):
            outcome = "pass"
    if outcome == "continue" and (final or est.rounds >= p.max_rounds):
        outcome = "inconclusive"
    return MetricDecision(
        metric,
        outcome,
        est.pairs,
        math.exp(est.mean),
        math.exp(lower),
        math.exp(upper),
        est.rounds,
        est.se,
    )


def explain(d: MetricDecision, p: SprtParams) -> str:
    """What a metric's answer means, in the rule's own terms."""
    if d.outcome == "fail":
        return (
            f"{d.metric} is slower: the data exclude a slowdown smaller than "
            f"{p.fail_margin:.0%} (upper bound {d.ci_high:.3f} < {1 - p.fail_margin:.2f})"
        )
    if d.outcome == "pass":
        return (
            f"{d.metric} is the same within the tolerance: the data exclude a slowdown of "
            f"{p.tolerance:.0%} or more (lower bound {d.ci_low:.3f} > {1 - p.tolerance:.2f})"
        )
    return (
        f"{d.metric} is unknown: the bounds {d.ci_low:.3f}-{d.ci_high:.3f} exclude neither "
        f"a slowdown under {p.fail_margin:.0%} nor one of {p.tolerance:.0%}"
    )


def combine(decisions: list[MetricDecision]) -> Outcome:
    """Fail if any metric established a slowdown; pass only if all passed."""
    outcomes = {d.outcome for d in decisions}
    if "fail" in outcomes:
        return "fail"
    if outcomes == {"pass"}:
        return "pass"
    if "continue" in outcomes:
        return "continue"
    return "inconclusive"


def paired_summary(cand: list[float], base: list[float]) -> tuple[float, float, float]:
    """Geometric mean ratio of paired positive values and its 95% t interval
    (one value per process pair, e.g. load times); (ratio, nan, nan) with one pair."""
    xs = log_ratios(cand, base)
    if not xs:
        return math.nan, math.nan, math.nan
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return math.exp(mean), math.nan, math.nan
    half = t_quantile(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def load_time_summary(cand: list[float], base: list[float]) -> str:
    """Model load time, candidate vs baseline, one pair per process pair: reported only."""
    ratio, low, high = paired_summary(cand, base)
    if math.isnan(ratio):
        return "model load time not measured"
    ci = "" if math.isnan(low) else f"95% CI {low:.2f}-{high:.2f}, "
    return (
        f"model load time candidate/baseline {ratio:.2f} "
        f"({ci}{len(cand)} process pairs; reported, not gated)"
    )


def memory_check(
    cand: list[int], base: list[int], fail_above: float, warn_above: float | None
) -> tuple[Literal["pass", "fail", "warn", "skip"], str]:
    """Peak resident memory, nearly deterministic: the largest candidate peak against
    the largest baseline peak, failing above ``fail_above`` (a fraction), warning
    above ``warn_above``."""
    if not cand or not base or min(cand + base) <= 0:
        return "skip", "peak resident memory not measured on this platform"
    c, b = max(cand), max(base)
    growth = c / b - 1
    said = (
        f"peak resident memory {c / 2**20:.0f} MiB vs baseline {b / 2**20:.0f} MiB "
        f"({growth:+.1%}; fails above +{fail_above:.0%}"
    )
    if growth > fail_above:
        return "fail", said + ")"
    if warn_above is not None and growth > warn_above:
        return "warn", said + f", warns above +{warn_above:.0%})"
    return "pass", said + ")"


STALL_FACTOR = 3.0
"""A timed request is stalled when its rate is under 1/STALL_FACTOR of the median rate of
the same engine role's requests: far outside what request-to-request noise does (a pair's
log-ratio has an SD of about 0.1 on a quiet machine), and what another busy process does
to an engine whose threads fill every core (it measured 4 to 30 times slower)."""


def stalled(rates: list[float], factor: float = STALL_FACTOR) -> int:
    """How many of one role's timed request rates are stalled (see STALL_FACTOR)."""
    positive = [r for r in rates if r > 0]
    if not positive:
        return 0
    median = statistics.median(positive)
    return sum(1 for r in positive if r * factor < median)


def busy_note(
    stalls: dict[str, int],
    requests: int,
    load_max: float | None,
    cpus: int,
    threads: int | None = None,
) -> str:
    """Say when the measurement was disturbed, else ''.

    Two signs, each on its own: stalled requests (see ``stalled``; ``stalls`` counts them per
    engine role, of ``requests`` timed requests each), and a 1-minute load average, read after
    each round, of at least the engine's threads (``threads``, else every CPU) plus one: the
    engine under test counts towards the load itself, so at least one more runnable task
    competed with it. Stalls in one engine only may also be that engine's own doing."""
    signs = [
        f"{n} of {requests} timed requests of the {role} ran at under 1/{STALL_FACTOR:.0f} of "
        "its median rate"
        for role, n in stalls.items()
        if n
    ]
    bar = min(cpus, threads or cpus) + 1
    if load_max is not None and load_max >= bar:
        signs.append(
            f"the load average, the engine's own threads included, reached {load_max:.1f} "
            f"on {cpus} CPUs"
        )
    if not signs:
        return ""
    stalled_roles = [role for role, n in stalls.items() if n]
    head = "the machine was busy during the measurement"
    if len(stalled_roles) == 1 and len(signs) == 1:
        head = f"the machine may have been busy, or the {stalled_roles[0]} stalls now and then"
    return (
        f"{head} ("
        + "; ".join(signs)
        + "): other work makes the test need more pairs and can leave it inconclusive; "
        "run the gate where nothing else runs (its own CI job), or set gate.threads "
        "below the CPU count"
    )


def floor_rule(cand: list[float], floor: float) -> Outcome:
    """The field's absolute rule: fail when the median is under a fixed tok/s floor."""
    return "fail" if statistics.median(cand) < floor else "pass"


def median_ratio_rule(cand: list[float], base: list[float], cutoff: float = 0.9) -> Outcome:
    """The field's one-shot rule: fail when median(candidate)/median(baseline) < cutoff."""
    return "fail" if statistics.median(cand) / statistics.median(base) < cutoff else "pass"
