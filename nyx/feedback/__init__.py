"""VLM feedback (Stage 2): readers answer from windows of retrieved documents; the answers pick preference triples."""

from nyx.feedback.preferences import (
    FeedbackConfig,
    FeedbackStats,
    collect_feedback,
    preference_for_query,
    select_preference,
)
from nyx.feedback.readers import (
    CachedReader,
    GeneratorReader,
    MiniLMOptionReader,
    OptionReaderConfig,
    Reader,
    as_reader,
)
from nyx.feedback.triples import FeedbackTriple, read_triples, write_triples
from nyx.feedback.windows import WindowScore, score_window_answer, sliding_windows

__all__ = [
    "CachedReader",
    "FeedbackConfig",
    "FeedbackStats",
    "FeedbackTriple",
    "GeneratorReader",
    "MiniLMOptionReader",
    "OptionReaderConfig",
    "Reader",
    "WindowScore",
    "as_reader",
    "collect_feedback",
    "preference_for_query",
    "read_triples",
    "score_window_answer",
    "select_preference",
    "sliding_windows",
    "write_triples",
]
