"""Episodic N-way K-shot sampling for few-shot learning.

An episode draws ``ways`` classes, then ``shots`` support and ``queries`` query samples of each,
without overlap (Vinyals et al. 2016, "Matching Networks for One Shot Learning", NeurIPS; the
protocol of Snell et al. 2017 and of the few-shot literature since).  Episode ``i`` of a sampler is
a pure function of ``(seed, i)``, so an evaluation over 600 episodes is reproducible episode by
episode; :meth:`EpisodeSampler.draw` takes a generator instead (the training engine's seeded
per-epoch generator, which makes meta-training resumable).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from eotransfer.errors import ConfigError


@dataclass(frozen=True)
class Episode:
    """Indices (into the sampler's ``labels``) of the support and query samples, and the classes drawn.

    ``support`` is ordered class by class (``shots`` of ``classes[0]``, then of ``classes[1]`` ...),
    as is ``query``; :attr:`support_labels` and :attr:`query_labels` are episode labels 0..ways-1.
    """

    support: np.ndarray
    query: np.ndarray
    classes: np.ndarray
    shots: int
    queries: int

    @property
    def ways(self) -> int:
        return len(self.classes)

    @property
    def support_labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.ways, dtype=np.int64), self.shots)

    @property
    def query_labels(self) -> np.ndarray:
        return np.repeat(np.arange(self.ways, dtype=np.int64), self.queries)


class EpisodeSampler:
    """Draws N-way K-shot episodes from ``labels`` (class ids, one per sample).

    ``classes`` restricts the episodes to those class ids (the base or the novel classes) and
    ``class_names`` name them in messages.  Impossible settings fail at construction with a
    message naming ``--ways``, ``--shots`` or ``--queries``.
    """

    def __init__(
        self, labels: Sequence[int] | np.ndarray, ways: int, shots: int, queries: int, seed: int = 0,
        classes: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
    ) -> None:  # fmt: skip
        self.labels = np.asarray(labels, dtype=np.int64)
        self.ways, self.shots, self.queries, self.seed = int(ways), int(shots), int(queries), int(seed)
        pool = np.unique(self.labels) if classes is None else np.asarray(sorted(set(classes)), dtype=np.int64)
        self.classes = pool
        names = list(class_names) if class_names is not None else None

        def name(c: int) -> str:
            return names[c] if names is not None and 0 <= c < len(names) else str(c)

        if self.ways < 1:
            raise ConfigError(f"--ways: {self.ways} must be at least 1")
        if self.shots < 1:
            raise ConfigError(f"--shots: {self.shots} must be at least 1")
        if self.queries < 1:
            raise ConfigError(f"--queries: {self.queries} must be at least 1")
        if self.ways > len(pool):
            shown = ", ".join(name(int(c)) for c in pool)
            raise ConfigError(
                f"--ways: {self.ways} ways but only {len(pool)} classes are available ({shown}); "
                f"lower --ways to at most {len(pool)} or add classes"
            )
        self.members = {int(c): np.flatnonzero(self.labels == c) for c in pool}
        smallest = min(pool, key=lambda c: (len(self.members[int(c)]), int(c)))
        n_small = len(self.members[int(smallest)])
        if self.shots + self.queries > n_small:
            raise ConfigError(
                f"--shots/--queries: {self.shots} shots + {self.queries} queries = {self.shots + self.queries} "
                f"samples per class, but class '{name(int(smallest))}' has only {n_small}; lower --shots or "
                f"--queries so that they add up to at most {n_small}"
            )

    def draw(self, rng: np.random.Generator) -> Episode:
        """One episode drawn with ``rng``."""
        chosen = np.sort(rng.choice(self.classes, size=self.ways, replace=False))
        support, query = [], []
        for c in chosen:
            picked = rng.choice(self.members[int(c)], size=self.shots + self.queries, replace=False)
            support.append(picked[: self.shots])
            query.append(picked[self.shots :])
        return Episode(np.concatenate(support), np.concatenate(query), chosen, self.shots, self.queries)

    def episode(self, i: int) -> Episode:
        """Episode ``i``: the same for the same ``(seed, i)``, whatever was drawn before."""
        return self.draw(np.random.default_rng(np.random.SeedSequence([self.seed, int(i)])))

    def episodes(self, n: int) -> Iterator[Episode]:
        """Episodes ``0 .. n-1``."""
        return (self.episode(i) for i in range(n))
