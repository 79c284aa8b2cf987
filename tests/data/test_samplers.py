"""Episode and batch samplers: seeded, reproducible, shardable, and refusing impossible shapes."""
import numpy as np
import pytest

from data.samplers import EpisodeSampler, PoolEpisodeSampler, ShuffledBatchSampler
from utils.errors import UserError

LABELS = np.repeat(np.arange(7), [10, 12, 9, 15, 10, 11, 20])


def test_episode_layout_is_class_major_support_then_query():
    episode = next(iter(EpisodeSampler(LABELS, way=3, shot=2, query=4, n_episodes=1, seed=1)))
    labels = LABELS[episode]
    support, query = labels[:6].reshape(3, 2), labels[6:].reshape(3, 4)
    assert (support == support[:, :1]).all() and (query == query[:, :1]).all()
    assert (support[:, 0] == query[:, 0]).all() and len(set(support[:, 0])) == 3
    assert len(set(episode)) == len(episode)


def test_same_seed_same_episodes_and_shards_partition_them():
    make = lambda **kw: list(EpisodeSampler(LABELS, 5, 1, 3, n_episodes=9, seed=7, **kw))
    whole = make()
    assert whole == make() and whole != list(EpisodeSampler(LABELS, 5, 1, 3, n_episodes=9, seed=8))
    shards = [make(rank=r, world=2) for r in range(2)]
    # 9 episodes: rank 1's share is padded with the first episode, so both ranks take 5 steps
    assert shards[0] == whole[0::2] and shards[1] == whole[1::2] + whole[:1]


def test_pool_sampler_uses_every_image_at_most_once_and_depends_on_epoch():
    sampler = PoolEpisodeSampler(LABELS, way=3, shot=2, query=2, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    used = [i for episode in first for i in episode]
    assert len(used) == len(set(used)) and len(first) <= len(sampler)
    assert first == list(sampler)  # same epoch, same episodes
    sampler.set_epoch(1)
    assert list(sampler) != first


@pytest.mark.parametrize("way, shot, query, needle", [(8, 1, 1, "8-way"), (3, 5, 5, "--n_shot"),
                                                      (3, 0, 5, "shot")])
def test_impossible_episodes_are_refused(way, shot, query, needle):
    with pytest.raises(UserError, match=needle):
        EpisodeSampler(LABELS, way, shot, query, n_episodes=1)


def test_shuffled_batches_reproducible_per_epoch_and_sharded():
    sampler = ShuffledBatchSampler(50, 8, seed=2)
    sampler.set_epoch(4)
    batches = list(sampler)
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)  # last partial batch dropped
    assert batches == list(sampler)
    sampler.set_epoch(5)
    assert list(sampler) != batches
    halves = [ShuffledBatchSampler(50, 8, seed=2, rank=r, world=2) for r in range(2)]
    for half in halves:
        half.set_epoch(4)
    assert list(halves[0]) == batches[0::2] and list(halves[1]) == batches[1::2]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_shares_are_equal_and_pad_like_paddle(world):
    from data.samplers import rank_count, rank_share
    for n in range(0, 11):
        items = [f"b{i}" for i in range(n)]
        shares = [rank_share(items, r, world) for r in range(world)]
        assert {len(s) for s in shares} == {rank_count(n, world)} == {-(-n // world)}
        # padded with the list's first items, then dealt round-robin (DistributedBatchSampler)
        padded = (items * world)[:rank_count(n, world) * world]
        assert [b for i in range(rank_count(n, world)) for b in (s[i] for s in shares)] == padded
    assert rank_share(["a", "b", "c"]) == ["a", "b", "c"]


def test_samplers_give_every_rank_the_same_number_of_batches():
    for n_episodes in (1, 5, 9):  # odd counts: the last rank's share is padded
        shards = [list(EpisodeSampler(LABELS, 3, 1, 2, n_episodes=n_episodes, seed=7, rank=r, world=2))
                  for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == len(EpisodeSampler(LABELS, 3, 1, 2, n_episodes, world=2))
    for n_items in (40, 48, 50):  # 5, 6, 6 batches of 8
        sizes = {len(list(ShuffledBatchSampler(n_items, 8, seed=1, rank=r, world=3))) for r in range(3)}
        assert sizes == {len(ShuffledBatchSampler(n_items, 8, rank=0, world=3))}


@pytest.mark.parametrize("world", [2, 3])
def test_pool_sampler_is_sharded_by_rank(world):
    whole = PoolEpisodeSampler(LABELS, way=3, shot=2, query=2, seed=3)
    whole.set_epoch(2)
    episodes = list(whole)
    shards = []
    for rank in range(world):
        shard = PoolEpisodeSampler(LABELS, way=3, shot=2, query=2, seed=3, rank=rank, world=world)
        shard.set_epoch(2)
        shards.append(list(shard))
        assert len(shards[-1]) == -(-len(episodes) // world) <= len(shard)
    assert [e for i in range(len(shards[0])) for e in (s[i] for s in shards)][:len(episodes)] == episodes
