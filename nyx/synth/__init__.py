"""NyxQA construction: chunking, QA generation, post-processing and splits, hard-negative mining.

Each stage is a function that takes settings and inputs and returns ``(results, stats)``; Dagster assets
are thin wrappers around them:

- :func:`nyx.synth.chunking.chunk_documents`  documents -> chunks (the retrieval corpus)
- :func:`nyx.synth.qa.synthesize_qa`           chunks -> QA records (with a generator from
  :func:`nyx.synth.generators.make_generator`)
- :func:`nyx.synth.nyxqa.build_nyxqa`          QA records -> NyxQA (filters, options, splits);
  :func:`nyx.synth.nyxqa.export_beir` writes it as BEIR folders
- :func:`nyx.synth.mining.mine_hard_negatives` train queries -> hard negatives
"""

from nyx.synth.chunking import ChunkingConfig, TokenCounter, chunk_documents, load_token_counter
from nyx.synth.generators import GeneratorConfig, make_generator
from nyx.synth.mining import MiningConfig, mine_hard_negatives
from nyx.synth.nyxqa import NyxQA, NyxQAConfig, build_nyxqa, export_beir
from nyx.synth.qa import stratified_sample, synthesize_qa

__all__ = [
    "ChunkingConfig",
    "GeneratorConfig",
    "MiningConfig",
    "NyxQA",
    "NyxQAConfig",
    "TokenCounter",
    "build_nyxqa",
    "chunk_documents",
    "export_beir",
    "load_token_counter",
    "make_generator",
    "mine_hard_negatives",
    "stratified_sample",
    "synthesize_qa",
]
