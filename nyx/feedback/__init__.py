"""VLM feedback (Stage 2): readers answer from windows of retrieved documents; the answers pick preference triples."""

from nyx.feedback.preferences import (
    FeedbackConfig,
    FeedbackStats,
    FeedbackTriple,
    WindowScore,
    collect_feedback,
    preference_for_query,
    read_triples,
    score_window_answer,
    select_preference,
    sliding_windows,
    write_triples,
)
from nyx.feedback.readers import (
    CachedReader,
    GeneratorReader,
    MiniLMOptionReader,
    OptionReaderConfig,
    Reader,
    as_reader,
)

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
