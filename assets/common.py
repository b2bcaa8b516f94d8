"""Small helpers shared by the asset modules (profile with launchpad overrides, file listings)."""

import dataclasses
from typing import Any

import dagster as dg
from pydantic import Field

from orchestration.resources import NyxSettings


class ProfileConfig(dg.Config):
    """Launchpad config of every Nyx asset: nested overrides of the profile for this run only,
    e.g. ``{"overrides": {"chunking": {"max_tokens": 120}}}``."""

    overrides: dict[str, Any] = Field(default_factory=dict)


def profile_for(settings: NyxSettings, config: ProfileConfig | None = None):
    """The settings' profile with its overrides, then this run's launchpad overrides."""
    return settings.load_profile(config.overrides if config else None)


def backbone_path(profile) -> str:
    """Local folder (or hub id) of the backbone named by the profile; builds the tiny model when needed."""
    from nyx.model.profiles import resolve_profile

    return str(resolve_profile(profile.model).materialize())


def generator_config(profile, paths):
    """The profile's generator settings with the data-local response cache and the backbone for ``local``."""
    cfg = profile.generator
    # the one pixel budget (profile.images) also sizes the images sent to the generator and reader VLMs
    cfg = cfg.model_copy(update={"image": dataclasses.replace(
        cfg.image, max_pixels=profile.images.max_pixels, min_pixels=profile.images.min_pixels)})
    if cfg.kind == "openai" and not cfg.openai.cache_dir:
        cfg = cfg.model_copy(update={"openai": cfg.openai.model_copy(update={"cache_dir": str(paths.cache / "generator")})})
    if cfg.kind == "local" and not cfg.local.model_path:
        cfg = cfg.model_copy(update={"local": cfg.local.model_copy(update={"model_path": backbone_path(profile)})})
    return cfg


def embedding_store(settings: NyxSettings, profile):
    """The embedding store every asset of a run shares (``work/embeddings``, one folder per model), storing vectors
    as the profile's index settings say."""
    from nyx.index.store import EmbeddingStore

    return EmbeddingStore(settings.paths.embeddings, dtype=profile.index.config.store_dtype)
