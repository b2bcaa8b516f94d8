"""The shared JSONL line reader: one value or one located error per non-blank line; the reject policy on top."""

from __future__ import annotations

import pytest

from nyx.data.jsonl import iter_json_lines, iter_jsonl_values
from nyx.data.rejects import RecordError, RejectLog


def _file(tmp_path, content: bytes):
    path = tmp_path / "f.jsonl"
    path.write_bytes(content)
    return path


def test_lines_are_numbered_in_the_file_and_indexed_among_non_blank_ones(tmp_path):
    path = _file(tmp_path, b'{"a": 1}\n\n  \n[2]\n"x\xff"\n{"cut": ')
    lines = list(iter_json_lines(path))
    assert [(x.lineno, x.index, x.where) for x in lines] == [
        (1, 0, "f.jsonl:1"),
        (4, 1, "f.jsonl:4"),
        (5, 2, "f.jsonl:5"),
        (6, 3, "f.jsonl:6"),
    ]
    assert [x.value for x in lines[:2]] == [{"a": 1}, [2]] and lines[0].cause is None
    assert str(lines[2].error()).startswith("line is not valid UTF-8 (invalid start byte at byte 2)")
    assert lines[2].text == '"x\ufffd"'
    assert str(lines[3].error()) == "malformed JSON: Expecting value at column 9"
    assert str(lines[3].error(note_truncation=True)).endswith("(last line has no newline: the file looks truncated)")
    assert not lines[2].truncated and lines[3].truncated
    with pytest.raises(ValueError, match="decoded"):
        lines[0].error()


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such JSONL file: .*nope.jsonl"):
        next(iter_json_lines(tmp_path / "nope.jsonl"))


def test_bad_lines_and_refused_values_are_rejected_with_location_and_text_or_raised(tmp_path):
    path = _file(tmp_path, b'{"a": 1}\n{"a": \n{"b": 2}\n')

    def parse(value, line):
        if "a" not in value:
            raise RecordError("no a", record_id="r")
        return value["a"]

    rejects = RejectLog(stage="t")
    assert list(iter_jsonl_values(path, rejects, parse)) == [1]
    assert [(i["location"], i["reason"], i["raw"], i["record_id"]) for i in rejects.items] == [
        ("f.jsonl:2", "malformed JSON: Expecting value at column 1", '{"a": ', None),
        ("f.jsonl:3", "no a", '{"b": 2}', "r"),
    ]
    with pytest.raises(RecordError, match="at f.jsonl:2: malformed JSON"):
        list(iter_jsonl_values(path, None, parse))
    custom = RejectLog()
    list(iter_jsonl_values(path, custom, parse, malformed=lambda line: RecordError(f"bad: {line.cause}")))
    assert custom.items[0]["reason"].startswith("bad: Expecting value: line 2 column 1")
