"""Feedback preferences on hand-made cases, the answer cache, and the offline MiniLM reader."""

from collections.abc import Sequence

import pytest

from nyx.data.records import Record
from nyx.eval.answers import mc_correct
from nyx.feedback import (
    CachedReader,
    FeedbackConfig,
    GeneratorReader,
    MiniLMOptionReader,
    Reader,
    collect_feedback,
    preference_for_query,
    read_triples,
    sliding_windows,
    write_triples,
)
from nyx.synth.generators.base import Generator

CHOICES = ["Rome", "Paris", "Oslo", "Bern"]


def mc_query(qid="q1", correct=1, **extra):
    return Record.from_text(
        qid, "Which city?", choices=CHOICES, correct_index=correct, answer=CHOICES[correct], **extra
    )


def answers_from(table: dict[str, str], default: str = "Rome"):
    """A fake reader function: the answer of the first document of the window found in ``table``."""
    calls = []

    def fn(query: Record, doc_ids: list[str]) -> str:
        calls.append(tuple(doc_ids))
        for d in doc_ids:
            if d in table:
                return table[d]
        return default

    fn.calls = calls
    return fn


RANKED = ["d1", "d2", "d3", "d4", "d5", "d6"]


# -- windows -------------------------------------------------------------------------------------------------


def test_sliding_windows_cover_every_document_once_at_the_end():
    ids = ["a", "b", "c", "d", "e"]
    assert sliding_windows(ids, 1, 1) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert sliding_windows(ids, 2, 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert sliding_windows(ids, 3, 1) == [["a", "b", "c"], ["b", "c", "d"], ["c", "d", "e"]]
    assert sliding_windows(ids, 2, 3) == [["a", "b"], ["d", "e"]]
    assert sliding_windows(ids, 9, 1) == [ids]
    assert sliding_windows([], 1, 1) == []
    with pytest.raises(ValueError):
        sliding_windows(ids, 0, 1)


# -- positive / negative selection ---------------------------------------------------------------------------


def test_first_correct_window_is_positive_and_correct_documents_are_not_negatives():
    cfg = FeedbackConfig(top_k=6)
    fn = answers_from({"d3": "Paris", "d5": "Paris"})
    triple, windows = preference_for_query(mc_query(), RANKED, fn, cfg)
    assert triple.positive_id == "d3" and triple.positive_rank == 3
    assert triple.negative_ids == ["d1", "d2", "d4"]  # d5 answered correctly too, but d4 comes first anyway

    fn = answers_from({"d2": "Paris", "d3": "B"})  # the letter counts as the correct option
    triple, _ = preference_for_query(mc_query(), RANKED, fn, cfg.model_copy(update={"early_stop": False}))
    assert triple.positive_id == "d2"
    assert triple.negative_ids == ["d1", "d4", "d5"]  # d3 also correct: skipped
    assert triple.n_correct_windows == 2


def test_correct_documents_become_negatives_when_the_check_is_off():
    cfg = FeedbackConfig(top_k=6, exclude_correct_negatives=False)
    triple, _ = preference_for_query(mc_query(), RANKED, answers_from({"d2": "Paris", "d3": "Paris"}), cfg)
    assert triple.positive_id == "d2"
    assert triple.negative_ids == ["d1", "d3", "d4"]


def test_gold_documents_are_kept_out_of_negatives_and_ranked():
    fn = answers_from({"d4": "Paris"})
    triple, _ = preference_for_query(mc_query(), RANKED, fn, FeedbackConfig(), gold_ids=["d2"])
    assert triple.positive_id == "d4" and triple.negative_ids == ["d1", "d3", "d5"]
    assert triple.stage1_rank_of_gold == 2
    off = FeedbackConfig(exclude_gold_negatives=False)
    assert preference_for_query(mc_query(), RANKED, fn, off, ["d2"])[0].negative_ids == ["d1", "d2", "d3"]


def test_ties_first_window_with_the_best_score_wins_and_a_better_later_window_beats_an_earlier_one():
    open_q = Record.from_text("q2", "What fruit?", answer="red apple")
    cfg = FeedbackConfig(top_k=6)
    # d2 and d4 both reach F1 2/3 ("apple" vs "red apple"): the first wins
    triple, _ = preference_for_query(open_q, RANKED, answers_from({"d2": "apple", "d4": "apple"}, "pear"), cfg)
    assert triple.positive_id == "d2" and triple.positive_score == pytest.approx(2 / 3)
    assert triple.negative_ids == ["d1", "d3", "d5"]  # d4 is correct (F1 > 0): excluded
    # a later exact answer beats an earlier partial one
    triple, _ = preference_for_query(open_q, RANKED, answers_from({"d2": "apple", "d4": "red apple"}, "pear"), cfg)
    assert triple.positive_id == "d4" and triple.positive_rank == 4


def test_f1_threshold_decides_what_counts_as_correct_for_open_questions():
    open_q = Record.from_text("q2", "What fruit?", answer="red apple")
    fn = answers_from({"d2": "apple"}, "pear")
    assert preference_for_query(open_q, RANKED, fn, FeedbackConfig(f1_threshold=0.7))[0] is None
    assert preference_for_query(open_q, RANKED, fn, FeedbackConfig(f1_threshold=0.5))[0].positive_id == "d2"


def test_no_correct_window_gives_no_triple():
    triple, windows = preference_for_query(mc_query(), RANKED, answers_from({}), FeedbackConfig())
    assert triple is None and len(windows) == 6


def test_wider_windows_take_the_top_ranked_document_of_the_winning_window():
    cfg = FeedbackConfig(top_k=6, window_size=2, stride=1)
    fn = answers_from({"d3": "Paris"})  # any window holding d3 answers right
    triple, windows = preference_for_query(mc_query(), RANKED, fn, cfg.model_copy(update={"early_stop": False}))
    assert [w.doc_ids for w in windows][:3] == [("d1", "d2"), ("d2", "d3"), ("d3", "d4")]
    assert triple.positive_id == "d2"  # top-ranked document of the first correct window (d2, d3)
    assert triple.negative_ids == ["d1", "d5", "d6"]  # d3, d4 lie in correct windows


@pytest.mark.parametrize("w,s", [(1, 1), (2, 1), (2, 2), (3, 1)])
@pytest.mark.parametrize("correct", [{"d2"}, {"d1", "d5"}, {"d4", "d6"}, {"d6"}, set()])
def test_early_stop_gives_the_same_triple_as_reading_every_window(w, s, correct):
    table = {d: "Paris" for d in correct}
    full_cfg = FeedbackConfig(top_k=6, window_size=w, stride=s, early_stop=False)
    early, _ = preference_for_query(
        mc_query(), RANKED, answers_from(table), full_cfg.model_copy(update={"early_stop": True})
    )
    full, _ = preference_for_query(mc_query(), RANKED, answers_from(table), full_cfg)
    if full is None:
        assert early is None
    else:
        assert (early.positive_id, early.negative_ids, early.positive_rank) == (
            full.positive_id,
            full.negative_ids,
            full.positive_rank,
        )


def test_early_stop_reads_fewer_windows():
    fn = answers_from({"d1": "Paris"})
    preference_for_query(mc_query(), RANKED, fn, FeedbackConfig())
    assert len(fn.calls) == 4  # d1 (positive), then d2..d4 are the three negatives


# -- collection over a fake retriever and reader -------------------------------------------------------------


class FakeRetriever:
    """Returns a fixed ranking per query."""

    def __init__(self, runs):
        self.runs = runs
        self.num_docs = 0
        self.indexed = None

    def index(self, corpus, rejects=None):
        self.indexed = [r.id for r in corpus]
        self.num_docs = len(self.indexed)
        return self.num_docs

    def search(self, queries, k=10, dim=None):
        return {q.id: dict(list(self.runs.get(q.id, {}).items())[:k]) for q in queries}


class KeywordReader(Reader):
    """Answers the option named in the first window document containing one, else the first option."""

    def __init__(self):
        self.calls = 0

    @property
    def reader_id(self):
        return "keyword-v1"

    def answer(self, query, window):
        self.calls += 1
        for doc in window:
            for c in query.extra.get("choices", []):
                if c in doc.text:
                    return c
        return query.extra.get("choices", [""])[0]


def test_collect_feedback_counts_drops_and_reuses_the_disk_cache(tmp_path):
    corpus = [
        Record.from_text(f"d{i}", t)
        for i, t in enumerate(
            ["nothing here", "the capital is Paris", "Oslo is cold", "more nothing", "Bern has bears"], start=1
        )
    ]
    queries = [
        mc_query("q1", 1),
        mc_query("q2", 2),
        mc_query("q3", 3),
        Record.from_text("q4", "no gold at all?"),
        mc_query("q5", 1),
    ]
    runs = {
        "q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d4": 0.6},  # Paris at rank 2 -> positive d2
        "q2": {"d3": 0.9, "d1": 0.5},  # Oslo at rank 1
        "q3": {"d1": 0.9, "d4": 0.8},  # Bern never retrieved -> dropped
        "q4": {"d1": 0.9},  # cannot be scored -> rejected
        "q5": {},  # no results
    }
    qrels = {"q1": {"d2": 1}, "q2": {"d2": 1}, "q3": {"d5": 1}}
    retriever, reader = FakeRetriever(runs), KeywordReader()
    cfg = FeedbackConfig(top_k=4)
    triples, stats = collect_feedback(queries, corpus, retriever, reader, cfg, tmp_path / "cache", qrels=qrels)
    assert retriever.indexed == ["d1", "d2", "d3", "d4", "d5"]
    assert [(t.query_id, t.positive_id, t.negative_ids) for t in triples] == [
        ("q1", "d2", ["d1", "d3", "d4"]),
        ("q2", "d3", ["d1"]),
    ]
    assert [t.stage1_rank_of_gold for t in triples] == [2, None]
    s = stats.to_dict()
    assert (s["n_queries"], s["n_kept"], s["n_no_correct_window"], s["n_rejected"], s["n_no_results"]) == (
        5,
        2,
        1,
        1,
        1,
    )
    assert s["kept_share"] == pytest.approx(0.4)
    assert s["avg_positive_rank"] == pytest.approx(1.5)
    assert s["positive_differs_from_gold_share"] == pytest.approx(0.5)  # q2's positive d3 is not its gold d2
    assert s["gold_in_top_k_share"] == pytest.approx(1 / 3)
    assert s["reader_calls"] == reader.calls and s["cache_hits"] == 0
    assert s["reject_reasons"] == {"no gold answer to score open-QA feedback": 1}

    again_reader = KeywordReader()
    triples2, stats2 = collect_feedback(queries, corpus, retriever, again_reader, cfg, tmp_path / "cache", qrels=qrels)
    assert again_reader.calls == 0 and stats2.reader_calls == 0 and stats2.cache_hits == stats.reader_calls
    assert [t.to_json() for t in triples2] == [t.to_json() for t in triples]

    path = write_triples(triples, tmp_path / "triples.jsonl")
    assert [t.to_json() for t in read_triples(path)] == [t.to_json() for t in triples]


def test_cache_key_changes_with_the_window_and_the_reader(tmp_path):
    inner = KeywordReader()
    cached = CachedReader(inner, tmp_path)
    q = mc_query()
    a, b = Record.from_text("a", "Paris"), Record.from_text("b", "Oslo")
    assert cached.answer(q, [a]) == "Paris" and cached.answer(q, [b]) == "Oslo"
    assert cached.answer(q, [a]) == "Paris" and (cached.hits, cached.misses) == (1, 2)


# -- generator adapter ---------------------------------------------------------------------------------------


class EchoGenerator(Generator):
    kind = "echo"

    def __init__(self):
        super().__init__()
        self.seen = []

    def generate_qa(self, chunk):
        raise NotImplementedError

    def generate_multi_image_qa(self, chunk):
        raise NotImplementedError

    def refine(self, chunk, pairs):
        raise NotImplementedError

    def distractors(self, question, answer, chunk, n=3):
        raise NotImplementedError

    def answer(self, question, context_records: Sequence[Record], choices=None):
        self.seen.append((question, [r.id for r in context_records], choices))
        return choices[-1] if choices else "open"


def test_generator_reader_passes_query_record_window_and_choices():
    gen = EchoGenerator()
    reader = GeneratorReader(gen)
    q = mc_query()
    assert reader.answer(q, [Record.from_text("a", "x")]) == "Bern"
    assert gen.seen == [(q, ["a"], CHOICES)]
    assert reader.answer(Record.from_text("q2", "open?", answer="y"), []) == "open"
    assert reader.reader_id.startswith("generator-echo-")


# -- the offline MiniLM option reader ------------------------------------------------------------------------

# (document, question, options, correct index). The first 16 name only the right option in the document;
# in the last 12 every option occurs, so word overlap alone cannot decide.
MC_SET = [
    (
        "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. It was designed by the engineering "
        "company of Gustave Eiffel and is 330 metres tall.",
        "In which year was the Eiffel Tower completed?",
        ["1899", "1889", "1901", "1875"],
        1,
    ),
    (
        "Honeybees communicate the location of flowers through a waggle dance. A colony usually has one queen, "
        "which can lay up to 2,000 eggs a day.",
        "How do honeybees tell each other where flowers are?",
        ["by a waggle dance", "by chemical trails", "by buzzing loudly", "by changing colour"],
        0,
    ),
    (
        "Mount Kilimanjaro, in Tanzania, is the highest mountain in Africa. Its summit, Uhuru Peak, rises 5,895 "
        "metres above sea level.",
        "In which country is Mount Kilimanjaro?",
        ["Kenya", "Uganda", "Tanzania", "Ethiopia"],
        2,
    ),
    (
        "The violinist Clara Hoff recorded her first album in Vienna in 1962, accompanied by the pianist Josef Marek.",
        "Who accompanied Clara Hoff on her first album?",
        ["Anton Weber", "Karl Bauer", "Franz Lehner", "Josef Marek"],
        3,
    ),
    (
        "Copper is an excellent conductor of electricity, which is why most household wiring is made of it. "
        "Over many years in the open air it turns green.",
        "Why is copper used for household wiring?",
        ["it conducts electricity well", "it is cheap to mine", "it never corrodes", "it is very light"],
        0,
    ),
    (
        "The Great Barrier Reef lies off the coast of Queensland, Australia. It is the world's largest coral reef "
        "system, made up of over 2,900 individual reefs.",
        "Off the coast of which Australian state does the Great Barrier Reef lie?",
        ["New South Wales", "Victoria", "Western Australia", "Queensland"],
        3,
    ),
    (
        "Our sourdough recipe uses rye flour for the starter and bakes the loaf at 250 degrees for 40 minutes in a "
        "cast-iron pot.",
        "Which flour does the recipe use for the starter?",
        ["rye flour", "spelt flour", "rice flour", "corn flour"],
        0,
    ),
    (
        "The town's lantern festival takes place every October on the banks of the river, and more than ten "
        "thousand visitors attend.",
        "In which month does the lantern festival take place?",
        ["March", "July", "October", "December"],
        2,
    ),
    (
        "Penguins cannot fly, but they are strong swimmers; the emperor penguin can dive to depths of over 500 "
        "metres to hunt fish and squid.",
        "How deep can emperor penguins dive?",
        ["over 50 metres", "over 500 metres", "over 5 metres", "over 5,000 metres"],
        1,
    ),
    (
        "The startup was founded in Nairobi by two engineers, and its first product was a solar-powered water pump "
        "for small farms.",
        "What was the startup's first product?",
        ["a mobile banking app", "an electric motorcycle", "a weather satellite", "a solar-powered water pump"],
        3,
    ),
    (
        "Vincent van Gogh painted The Starry Night in 1889 while staying at an asylum in Saint-Remy-de-Provence.",
        "Where was van Gogh staying when he painted The Starry Night?",
        ["at an asylum in Saint-Remy", "in Amsterdam", "in a Paris hotel", "at his brother's house"],
        0,
    ),
    (
        "The museum's new wing, opened in 2015, houses a collection of ancient Egyptian papyri and a restored "
        "wooden boat.",
        "What does the museum's new wing house?",
        ["Roman mosaics", "Viking swords", "Greek vases", "Egyptian papyri"],
        3,
    ),
    (
        "The Amazon river carries more water than any other river on Earth, more than the next seven combined.",
        "The ____ river carries more water than any other river on Earth.",
        ["Amazon", "Nile", "Yangtze", "Mississippi"],
        0,
    ),
    (
        "Marie Curie was the first person to win Nobel Prizes in two different sciences, physics and chemistry.",
        "Marie Curie won Nobel Prizes in physics and ____.",
        ["biology", "medicine", "chemistry", "mathematics"],
        2,
    ),
    (
        "In the match on Saturday, the home team won 3-1 thanks to two late goals from their captain, a defender.",
        "Who scored the two late goals for the home team?",
        ["the goalkeeper", "the coach", "the captain", "a substitute"],
        2,
    ),
    (
        "The bridge is painted a colour called International Orange, chosen because it stands out in the fog.",
        "Why was International Orange chosen for the bridge?",
        ["it was the cheapest paint", "it stands out in the fog", "it matches the hills", "it resists salt water"],
        1,
    ),
]

MC_HARD = [
    (
        "Construction of the Eiffel Tower began in 1887 and it was completed in 1889, three years after the Statue "
        "of Liberty was dedicated in 1886.",
        "In which year was the Eiffel Tower completed?",
        ["1887", "1889", "1886", "1901"],
        1,
    ),
    (
        "Anna was born in Lyon, studied medicine in Geneva, and later opened her own clinic in Marseille.",
        "Where did Anna open her clinic?",
        ["Lyon", "Geneva", "Marseille", "Paris"],
        2,
    ),
    (
        "The red team finished first, the blue team came second, and the green team was disqualified for a false start.",  # noqa: E501
        "Which team was disqualified?",
        ["the red team", "the blue team", "the green team", "the yellow team"],
        2,
    ),
    (
        "The cafe serves coffee in the morning, soup at lunchtime and cocktails in the evening.",
        "What does the cafe serve at lunchtime?",
        ["coffee", "soup", "cocktails", "sandwiches"],
        1,
    ),
    (
        "Tom plays the guitar, his sister Mia plays the drums, and their father sings.",
        "Which instrument does Mia play?",
        ["the guitar", "the piano", "the drums", "the violin"],
        2,
    ),
    (
        "The first bridge was built of wood in 1820; after a flood destroyed it, a stone bridge replaced it in 1865, "
        "and the present steel bridge dates from 1932.",
        "When was the stone bridge built?",
        ["1820", "1865", "1932", "1901"],
        1,
    ),
    (
        "Cats in the shelter are fed fish, dogs are fed chicken, and the rabbits get fresh carrots.",
        "What are the rabbits in the shelter fed?",
        ["fish", "chicken", "carrots", "lettuce"],
        2,
    ),
    (
        "The company moved its headquarters from Boston to Denver in 2010 and opened a second office in Austin in 2018.",  # noqa: E501
        "Where is the company's headquarters now?",
        ["Boston", "Denver", "Austin", "Chicago"],
        1,
    ),
    (
        "In the experiment, the plants kept in the dark died, those in red light grew slowly, and those in blue light "
        "grew fastest.",
        "Under which light did the plants grow fastest?",
        ["red light", "blue light", "darkness", "green light"],
        1,
    ),
    (
        "The novel was written in German, translated into French in 1950 and into English only in 1975.",
        "In which language was the novel originally written?",
        ["French", "English", "German", "Italian"],
        2,
    ),
    (
        "The orchestra's conductor is Maria Lopez; Peter Hahn leads the violins and Sven Olsen plays first trumpet.",
        "Who conducts the orchestra?",
        ["Peter Hahn", "Sven Olsen", "Maria Lopez", "Anna Berg"],
        2,
    ),
    (
        "The hikers left the hut at dawn, reached the glacier at noon and returned to the valley by nightfall.",
        "When did the hikers reach the glacier?",
        ["at dawn", "at noon", "by nightfall", "at midnight"],
        1,
    ),
]


def _mc_records(items, prefix):
    docs = [Record.from_text(f"{prefix}d{i}", d) for i, (d, _, _, _) in enumerate(items)]
    qs = [
        Record.from_text(f"{prefix}q{i}", q, choices=o, correct_index=c, answer=o[c])
        for i, (_, q, o, c) in enumerate(items)
    ]
    return qs, docs


@pytest.fixture(scope="module")
def option_reader():
    return MiniLMOptionReader()


def _correct(reader, qs, windows):
    return [mc_correct(reader.answer(q, w), q.extra["choices"], q.extra["correct_index"]) for q, w in zip(qs, windows)]


def test_minilm_reader_beats_chance_with_the_gold_document_and_not_without(option_reader):
    qs, docs = _mc_records(MC_SET + MC_HARD, "m")
    n = len(qs)
    with_gold = _correct(option_reader, qs, [[d] for d in docs])
    wrong_doc = _correct(option_reader, qs, [[docs[(i + 5) % n]] for i in range(n)])
    no_doc = _correct(option_reader, qs, [[] for _ in qs])
    assert sum(with_gold) / n >= 0.8  # 25/28 when written; chance is 0.25
    assert sum(with_gold[len(MC_SET) :]) / len(MC_HARD) >= 0.5  # every option occurs in these documents
    assert sum(wrong_doc) / n <= 0.45 and sum(no_doc) / n <= 0.45


def test_minilm_reader_answers_with_an_option_text_and_extracts_for_open_questions(option_reader):
    q = Record.from_text(
        "c1",
        "Marie Curie won Nobel Prizes in physics and ____.",
        choices=["biology", "medicine", "chemistry", "mathematics"],
        correct_index=2,
    )
    doc = Record.from_text("cd", MC_SET[13][0])
    assert option_reader.answer(q, [doc]) == "chemistry"
    assert option_reader.answer(q, []) in q.extra["choices"]
    open_q = Record.from_text("o1", "How deep can emperor penguins dive?", answer="over 500 metres")
    pdoc = Record.from_text("pd", MC_SET[8][0])
    assert "500 metres" in option_reader.answer(open_q, [pdoc])
    assert option_reader.answer(open_q, []) == ""
    assert "stand-in" in option_reader.describe()["note"]
