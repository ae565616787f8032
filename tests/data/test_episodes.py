"""EpisodeSampler: no support/query overlap, reproducible, and errors that name the option."""

from __future__ import annotations

import numpy as np
import pytest

from eotransfer.data.episodes import EpisodeSampler
from eotransfer.errors import ConfigError

# 4 classes: 10, 8, 6 and 12 samples, interleaved so that indices and labels differ
LABELS = np.array([0] * 10 + [1] * 8 + [2] * 6 + [3] * 12)[np.random.default_rng(0).permutation(36)]
NAMES = ["cropland", "forest", "water", "urban"]


def test_episode_has_the_asked_shape_and_no_overlap() -> None:
    sampler = EpisodeSampler(LABELS, ways=3, shots=2, queries=4, seed=7)
    for ep in sampler.episodes(50):
        assert len(ep.support) == 3 * 2 and len(ep.query) == 3 * 4
        assert not set(ep.support) & set(ep.query)
        assert len(set(ep.support)) == 6 and len(set(ep.query)) == 12
        assert len(set(ep.classes)) == 3
        # support and query come class by class, in the order of ep.classes
        np.testing.assert_array_equal(LABELS[ep.support], np.repeat(ep.classes, 2))
        np.testing.assert_array_equal(LABELS[ep.query], np.repeat(ep.classes, 4))
        np.testing.assert_array_equal(ep.support_labels, [0, 0, 1, 1, 2, 2])
        np.testing.assert_array_equal(ep.query_labels, np.repeat([0, 1, 2], 4))


def test_episodes_are_reproducible_and_vary() -> None:
    a = EpisodeSampler(LABELS, 3, 2, 4, seed=1)
    b = EpisodeSampler(LABELS, 3, 2, 4, seed=1)
    # episode i does not depend on what was drawn before
    e5 = b.episode(5)
    first = list(a.episodes(6))
    np.testing.assert_array_equal(first[5].support, e5.support)
    np.testing.assert_array_equal(first[5].query, e5.query)
    np.testing.assert_array_equal(first[5].classes, e5.classes)
    other = EpisodeSampler(LABELS, 3, 2, 4, seed=2).episode(5)
    assert not np.array_equal(other.support, e5.support) or not np.array_equal(other.query, e5.query)
    assert len({tuple(ep.support) for ep in first}) > 1
    # the generator form: same generator state, same episode
    x = a.draw(np.random.default_rng(3))
    y = a.draw(np.random.default_rng(3))
    np.testing.assert_array_equal(x.support, y.support)
    np.testing.assert_array_equal(x.query, y.query)


def test_classes_restrict_the_pool() -> None:
    sampler = EpisodeSampler(LABELS, ways=2, shots=1, queries=2, seed=0, classes=[1, 3])
    seen = set()
    for ep in sampler.episodes(20):
        seen |= set(ep.classes.tolist())
        assert set(LABELS[np.concatenate([ep.support, ep.query])]) <= {1, 3}
    assert seen == {1, 3}


def test_more_ways_than_classes_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"^--ways: 5 ways but only 4 classes are available \(cropland, forest, water, urban\)"
    ):
        EpisodeSampler(LABELS, ways=5, shots=1, queries=1, class_names=NAMES)
    with pytest.raises(ConfigError, match=r"^--ways: 3 ways but only 2 classes"):
        EpisodeSampler(LABELS, ways=3, shots=1, queries=1, classes=[0, 1])


def test_shots_plus_queries_beyond_the_smallest_class_is_refused() -> None:
    # class 2 ('water') has 6 samples: 4 + 3 = 7 is one too many, 3 + 3 fits
    with pytest.raises(ConfigError, match=r"^--shots/--queries: 4 shots \+ 3 queries = 7 .* class 'water' has only 6"):
        EpisodeSampler(LABELS, ways=2, shots=4, queries=3, class_names=NAMES)
    EpisodeSampler(LABELS, ways=2, shots=3, queries=3, class_names=NAMES)
    # restricted to classes 0 and 3, the smallest is cropland (10)
    with pytest.raises(ConfigError, match="class 'cropland' has only 10"):
        EpisodeSampler(LABELS, ways=2, shots=5, queries=6, classes=[0, 3], class_names=NAMES)


@pytest.mark.parametrize(
    ("kw", "option"), [({"ways": 0}, "--ways"), ({"shots": 0}, "--shots"), ({"queries": 0}, "--queries")]
)
def test_non_positive_values_name_the_option(kw: dict[str, int], option: str) -> None:
    args = {"ways": 2, "shots": 1, "queries": 1, **kw}
    with pytest.raises(ConfigError, match=f"^{option}: 0 must be at least 1"):
        EpisodeSampler(LABELS, **args)
