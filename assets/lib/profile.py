"""The profile as one asset run sees it: the launchpad config every asset takes (:class:`ProfileConfig`), the profile
with its overrides, and what the profile names (the backbone's folder, the generator and reader settings, the shared
embedding store)."""

import dagster as dg
from pydantic import Field

from orchestration.profile_config import given
from orchestration.resources import NyxSettings, ProfileOverrides


class ProfileConfig(dg.Config):
    """Launchpad config of every Nyx asset: nested overrides of the profile for this run only,
    e.g. ``{"overrides": {"chunking": {"max_tokens": 120}}}``. Typed: the launchpad refuses a setting that does not
    exist or a value of the wrong type before the run starts."""

    overrides: ProfileOverrides = Field(default_factory=ProfileOverrides)  # type: ignore[valid-type]


def profile_for(settings: NyxSettings, config: ProfileConfig | None = None):
    """The settings' profile with its overrides, then this run's launchpad overrides."""
    return settings.load_profile(given(config.overrides) if config else None)


def backbone_path(profile) -> str:
    """Local folder (or hub id) of the backbone named by the profile; builds the tiny model when needed."""
    from nyx.model.backbone import resolve_profile

    return str(resolve_profile(profile.model).materialize())


def generator_config(profile, paths):
    """The profile's generator settings with the data-local response cache and the backbone for ``local``."""
    cfg = profile.generator
    # the one pixel budget (profile.images) also sizes the images sent to the generator and reader VLMs
    cfg = cfg.model_copy(
        update={"image": cfg.image.replace(max_pixels=profile.images.max_pixels, min_pixels=profile.images.min_pixels)}
    )
    if cfg.kind == "openai" and not cfg.openai.cache_dir:
        cfg = cfg.model_copy(
            update={"openai": cfg.openai.model_copy(update={"cache_dir": str(paths.cache / "generator")})}
        )
    if cfg.kind == "local" and not cfg.local.model_path:
        cfg = cfg.model_copy(update={"local": cfg.local.model_copy(update={"model_path": backbone_path(profile)})})
    return cfg


def make_reader(profile, paths):
    """The profile's reader: the offline MiniLM option reader (a stand-in for a VLM) or the generator."""
    from nyx.feedback.readers import MiniLMOptionReader, as_reader

    reader = profile.reader
    if reader.kind == "minilm":
        return MiniLMOptionReader()
    from nyx.synth.generators import make_generator

    if reader.kind == "generator":
        cfg = generator_config(profile, paths)
        if cfg.kind == "openai" and not profile.generator.openai.cache_dir:
            # a reader runs after data_snapshot (feedback, evaluation): its responses go to the reader cache, which
            # is not versioned, rather than into the generator's versioned cache
            cfg = cfg.model_copy(
                update={"openai": cfg.openai.model_copy(update={"cache_dir": str(paths.reader_cache)})}
            )
        return as_reader(make_generator(cfg))
    openai = reader.openai
    if not openai.cache_dir:
        openai = openai.model_copy(update={"cache_dir": str(paths.reader_cache)})
    cfg = generator_config(profile, paths).model_copy(update={"kind": "openai", "openai": openai})
    return as_reader(make_generator(cfg))


def embedding_store(settings: NyxSettings, profile):
    """The embedding store every asset of a run shares (``work/embeddings``, one folder per model), storing vectors
    as the profile's index settings say."""
    from nyx.index.store import EmbeddingStore

    return EmbeddingStore(settings.paths.embeddings, dtype=profile.index.config.store_dtype)
