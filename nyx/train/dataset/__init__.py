"""Training triples for contrastive learning: (query, positive document, hard-negative documents).

The path from configured sources to the batches a training step sees, one module per step:

* :mod:`~nyx.train.dataset.examples` - :class:`TrainingExample` and what every reader shares (content identity, the
  training files' JSONL reader);
* :mod:`~nyx.train.dataset.research` - the public research code's format and its converter to Nyx triples;
* :mod:`~nyx.train.dataset.loading` - the sources (NyxQA + mined hard negatives, Nyx triples, research format) as
  examples;
* :mod:`~nyx.train.dataset.negatives` - exactly ``n_negatives`` real hard negatives per example;
* :mod:`~nyx.train.dataset.mixing` - cap and weight per source, concatenated into the :class:`TrainingSet`;
* :mod:`~nyx.train.dataset.batching` - seeded global batches, each process's slice, the in-batch false-negative mask.

Broken input (bad lines, unusable queries or positives, broken negatives) is recorded in the
:class:`~nyx.data.rejects.RejectLog` and never stops the run.
"""

from nyx.train.dataset.batching import batch_records, global_batches, in_batch_false_negatives, local_slice
from nyx.train.dataset.examples import TrainingExample, content_key
from nyx.train.dataset.loading import load_nyxqa, load_research, load_source, load_triples
from nyx.train.dataset.mixing import TrainingSet, apply_cap_and_weight, build_training_set
from nyx.train.dataset.negatives import fill_negatives
from nyx.train.dataset.research import RESEARCH_IMAGE_TOKEN, convert_research_file, research_content, research_to_triple

__all__ = [
    "RESEARCH_IMAGE_TOKEN",
    "TrainingExample",
    "TrainingSet",
    "apply_cap_and_weight",
    "batch_records",
    "build_training_set",
    "content_key",
    "convert_research_file",
    "fill_negatives",
    "global_batches",
    "in_batch_false_negatives",
    "load_nyxqa",
    "load_research",
    "load_source",
    "load_triples",
    "local_slice",
    "research_content",
    "research_to_triple",
]
