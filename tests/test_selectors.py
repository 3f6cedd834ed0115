import numpy as np
import pytest

from taskfit.api import Example
from taskfit.errors import UserError
from taskfit.prompting.selectors import FixedSelector, KNNSelector, RandomSelector


def ex(i: int, text: str, gold: str = "positive") -> Example:
    return Example(index=i, fields={"text": text}, gold=gold)


POOL = [ex(i, f"pool sentence number {i}") for i in range(30)]


def test_random_selection_is_seeded_per_example():
    a = RandomSelector(POOL, k=4, seed=1)
    b = RandomSelector(POOL, k=4, seed=1)
    query = ex(5, "a query")
    assert [d.index for d in a.select(query)] == [d.index for d in b.select(query)]
    assert len({d.index for d in a.select(query)}) == 4
    other_example = [d.index for d in a.select(ex(6, "another"))]
    other_seed = [d.index for d in RandomSelector(POOL, k=4, seed=2).select(query)]
    assert other_example != [d.index for d in a.select(query)] or other_seed != [d.index for d in a.select(query)]


def test_random_never_picks_the_example_itself():
    selector = RandomSelector(POOL[:5], k=4, seed=0)
    for member in POOL[:5]:
        assert member.fields not in [d.fields for d in selector.select(member)]


def test_fixed_indices_and_errors():
    selector = FixedSelector(POOL, k=2, seed=0, indices=[7, 3])
    assert [d.index for d in selector.select(ex(0, "q"))] == [7, 3]
    with pytest.raises(UserError, match="outside the pool"):
        FixedSelector(POOL, k=2, seed=0, indices=[99])
    with pytest.raises(UserError, match="pool has only"):
        RandomSelector(POOL[:2], k=3, seed=0)


def test_shuffled_order_is_a_seeded_permutation():
    plain = FixedSelector(POOL, k=4, seed=3, indices=[1, 2, 3, 4])
    shuffled = FixedSelector(POOL, k=4, seed=3, order="shuffled", indices=[1, 2, 3, 4])
    picked = [d.index for d in shuffled.select(ex(9, "q"))]
    assert sorted(picked) == [1, 2, 3, 4]
    assert picked == [d.index for d in shuffled.select(ex(9, "q"))]
    assert [d.index for d in plain.select(ex(9, "q"))] == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def toy_knn(tmp_path_factory):
    import os

    old = os.environ.get("TASKFIT_HOME")
    os.environ["TASKFIT_HOME"] = str(tmp_path_factory.mktemp("home"))
    pool = [ex(0, "The cat sat on the mat."), ex(1, "Stock markets fell sharply today."),
            ex(2, "A kitten was sleeping on a rug."), ex(3, "The football team won the championship."),
            ex(4, "Shares dropped as investors panicked."), ex(5, "Dogs love playing fetch in the park.")]
    yield KNNSelector(pool, k=2, seed=0, order="as_selected")
    if old is None:
        os.environ.pop("TASKFIT_HOME", None)
    else:
        os.environ["TASKFIT_HOME"] = old


def test_knn_returns_true_nearest_neighbours(toy_knn):
    assert sorted(i for i, _ in toy_knn.neighbours(ex(10, "A cat is lying on a carpet."))) == [0, 2]
    assert sorted(i for i, _ in toy_knn.neighbours(ex(11, "The stock market crashed."))) == [1, 4]
    # the same ranking as brute-force cosine similarity over the same embeddings
    from taskfit.prompting.embeddings import embed

    query = embed(["Puppies playing with a ball."], cache=False)[0]
    brute = list(np.argsort(-(toy_knn.pool_vectors @ query))[:2])
    assert [i for i, _ in toy_knn.neighbours(ex(12, "Puppies playing with a ball."))] == brute


def test_knn_similar_last_order_and_pool_cache(toy_knn):
    from taskfit.prompting.embeddings import embed

    toy_knn.order = "similar_last"
    demos = toy_knn.select(ex(10, "A cat is lying on a carpet."))
    nearest_first = [i for i, _ in toy_knn.neighbours(ex(10, "A cat is lying on a carpet."))]
    assert [d.index for d in demos] == nearest_first[::-1]
    texts = [d.fields["text"] for d in toy_knn.pool]
    again = embed(texts)  # served from the on-disk cache written when the selector was built
    assert np.array_equal(again, toy_knn.pool_vectors)
