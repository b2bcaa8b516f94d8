"""Nyx data layer: the mixed-modal record model and its readers and writers.

Modules (import what you need; this package imports only the light core):

* :mod:`nyx.data.records` - :class:`Part`, :class:`Record`, JSONL reading and writing;
* :mod:`nyx.data.rejects` - :class:`RecordError`, :class:`RejectLog` (bad input is counted, never fatal);
* :mod:`nyx.data.images`  - :func:`load_image` / :func:`verify_image` with Qwen's smart resize;
* :mod:`nyx.data.obelics` - OBELICS shards (Parquet/JSONL) as records;
* :mod:`nyx.data.beir`    - BEIR evaluation folders, qrels and TREC runs;
* :mod:`nyx.data.sample`  - the synthetic sample corpus bundled with the project.
"""

from nyx.data.records import Part, Record, iter_jsonl, read_jsonl, record_from_json, write_jsonl
from nyx.data.rejects import RecordError, RejectLog

__all__ = ["Part", "Record", "RecordError", "RejectLog", "iter_jsonl", "read_jsonl", "record_from_json", "write_jsonl"]
