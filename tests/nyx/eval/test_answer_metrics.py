"""Answer metrics against hand-computed values."""

import pytest

from nyx.data.records import Record
from nyx.eval.answers import (
    answer_metrics,
    chosen_option,
    exact_match,
    mc_correct,
    normalize_answer,
    option_letter,
    score_prediction,
    token_f1,
)


def test_normalisation_lowercases_strips_punctuation_articles_and_spaces():
    assert normalize_answer("  The Quick,  brown-fox! ") == "quick brownfox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_exact_match_is_best_over_gold_answers():
    assert exact_match("the Eiffel Tower.", ["Louvre", "Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel tower"]) == 0.0
    assert exact_match("x", []) == 0.0


def test_token_f1_hand_computed():
    # pred {quick, brown, fox}, gold {brown, fox, jumped}: P = R = 2/3
    assert token_f1("quick brown fox", "the brown fox jumped") == pytest.approx(2 / 3)
    # pred {paris, france} vs gold {paris}: P = 1/2, R = 1 -> 2/3; the other gold gives 0
    assert token_f1("Paris, France", ["London", "Paris"]) == pytest.approx(2 / 3)
    # repeated tokens are matched at most as often as in the gold: pred [red, red] vs gold [red]: P = 1/2, R = 1
    assert token_f1("red red", "red") == pytest.approx(2 / 3)
    assert token_f1("", "") == 1.0 and token_f1("the", "a") == 1.0  # both empty after normalisation
    assert token_f1("x", "the") == 0.0
    assert token_f1("completely wrong", "right answer") == 0.0


@pytest.mark.parametrize(
    "pred", ["B", "(B)", "B.", "B)", "Answer: B", "answer: b", "The answer is B", "(b)", "B) Paris", "Option B", "[B]"]
)
def test_letter_forms_name_the_option(pred):
    assert option_letter(pred, 4) == 1
    assert mc_correct(pred, ["Rome", "Paris", "Oslo", "Bern"], 1)


@pytest.mark.parametrize("pred", ["b", "a dog", "A dog", "Paris", "E", "Answer: E", "AB"])
def test_non_letters_and_out_of_range_letters_are_not_options(pred):
    assert option_letter(pred, 4) is None


def test_mc_correct_by_normalised_text_and_wrong_option():
    choices = ["the Red Apple", "a green pear", "Plum", "Fig"]
    assert mc_correct("red apple.", choices, 0)
    assert not mc_correct("green pear", choices, 0)
    assert not mc_correct("C", choices, 0)
    assert chosen_option("Green pear!", choices) == 1 and chosen_option("(D)", choices) == 3
    with pytest.raises(ValueError):
        mc_correct("x", choices, 4)


def _q(qid, modality, answer, choices=None, correct_index=None):
    extra = {"answer": answer, "modality": modality}
    if choices is not None:
        extra.update(choices=choices, correct_index=correct_index)
    return Record.from_text(qid, f"question {qid}?", **extra)


def test_answer_metrics_hand_computed_with_modality_breakdown():
    queries = [
        _q("q1", "text", "Paris", ["Rome", "Paris", "Oslo", "Bern"], 1),  # right by text: acc 1, em 1, f1 1
        _q("q2", "image1", "Paris", ["Rome", "Paris", "Oslo", "Bern"], 1),  # "Berlin": 0, 0, 0
        _q("q3", "text", "red apple"),  # open "apple": em 0, f1 2/3
        _q("q4", "image1", "Oslo", ["Rome", "Paris", "Oslo", "Bern"], 2),  # missing: 0, 0, 0
        _q("q5", "image2+", "Bern", ["Rome", "Paris", "Oslo", "Bern"], 3),  # letter "D": acc 1, em 0, f1 0
    ]
    preds = {"q1": "paris", "q2": "Berlin", "q3": "apple", "q5": "D"}
    m = answer_metrics(preds, queries)
    assert m["n"] == 5 and m["n_missing"] == 1
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["em"] == pytest.approx(1 / 5)
    assert m["f1"] == pytest.approx((1 + 2 / 3) / 5)
    assert list(m["by_modality"]) == ["text", "image1", "image2+"]
    assert m["by_modality"]["text"] == pytest.approx({"accuracy": 0.5, "em": 0.5, "f1": 5 / 6, "n": 2})
    assert m["by_modality"]["image1"]["accuracy"] == 0.0 and m["by_modality"]["image1"]["n"] == 2
    assert m["by_modality"]["image2+"]["accuracy"] == 1.0
    assert m["per_query"]["q3"] == pytest.approx({"correct": 0.0, "em": 0.0, "f1": 2 / 3})


def test_query_without_gold_answer_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'q9'"):
        score_prediction("x", Record.from_text("q9", "what?"))
    with pytest.raises(ValueError, match="'q8'.*correct_index"):
        score_prediction("x", Record.from_text("q8", "what?", choices=["a", "b"], correct_index=5))
