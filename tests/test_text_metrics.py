"""Known values for the text, correlation and ranking metrics (hand-computed)."""

import pytest

from taskfit.metrics.text import (
    average_precision,
    corpus_bleu,
    pearson,
    reciprocal_rank,
    rouge_l,
    spearman,
    squad_exact_match,
    squad_f1,
    squad_normalize,
)


def test_squad_normalization():
    assert squad_normalize("The  Eiffel Tower!") == "eiffel tower"
    assert squad_normalize("an apple, a pear") == "apple pear"
    assert squad_normalize("Theory") == "theory"  # 'the' only as a whole word


@pytest.mark.parametrize(
    ("pred", "golds", "em", "f1"),
    [
        ("Denver Broncos", ["Denver Broncos", "The Denver Broncos"], 1.0, 1.0),
        ("the Denver Broncos!", ["Denver Broncos"], 1.0, 1.0),
        ("Broncos", ["Denver Broncos"], 0.0, 2 * (1 * 0.5) / 1.5),  # P=1, R=1/2 -> 2/3
        ("Denver Broncos won", ["Denver Broncos"], 0.0, 0.8),  # P=2/3, R=1 -> 0.8
        ("Carolina Panthers", ["Denver Broncos"], 0.0, 0.0),
        ("Santa Clara", ["Levi's Stadium", "Santa Clara, California"], 0.0, 0.8),  # best gold: P=1, R=2/3
    ],
)
def test_squad_em_f1(pred, golds, em, f1):
    assert squad_exact_match(pred, golds) == em
    assert squad_f1(pred, golds) == pytest.approx(f1)


def test_correlations_on_fixed_vectors():
    gold = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert pearson(gold, [2.0, 4.0, 6.0, 8.0, 10.0]) == pytest.approx(1.0)
    assert spearman(gold, [1.0, 4.0, 9.0, 16.0, 100.0]) == pytest.approx(1.0)  # monotone, not linear
    assert pearson(gold, [1.0, 4.0, 9.0, 16.0, 100.0]) < 0.9
    assert spearman(gold, [5.0, 4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # spearman of [1,2,3,4] vs [1,3,2,4]: d = [0,1,1,0], rho = 1 - 6*2/(4*15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert pearson(gold, [3.0] * 5) == 0.0  # constant prediction: defined as no correlation


def test_mrr_and_map_on_hand_ranked_lists():
    assert reciprocal_rank(["x", "y", "gold"], ["gold"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x", "y"], ["gold"]) == 0.0
    # golds at ranks 1 and 3 of 2 relevant: (1/1 + 2/3) / 2
    assert average_precision(["a", "x", "b", "y"], ["a", "b"]) == pytest.approx((1 + 2 / 3) / 2)
    # one of two golds never retrieved: (1/2) / 2
    assert average_precision(["x", "a"], ["a", "b"]) == pytest.approx(0.25)
    assert average_precision(["a", "a", "b"], ["a", "b"]) == pytest.approx((1 + 2 / 3) / 2)  # duplicates ignored


def test_bleu_and_rouge_on_short_chinese_strings():
    assert corpus_bleu(["北京是中国的首都"], ["北京是中国的首都"]) == pytest.approx(100.0)
    assert corpus_bleu(["上海"], ["北京是中国的首都"]) < 5
    # character LCS of 北京大学 vs 北京 is 2: P = 2/4, R = 2/2, F = 2/3
    assert rouge_l("北京大学", "北京") == pytest.approx(2 / 3)
    assert rouge_l("北京", "北京") == pytest.approx(1.0)
    assert rouge_l("上海", "北京") == 0.0
