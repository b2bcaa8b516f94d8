"""Helpers the asset modules share; no asset or check is defined here.

``profile`` (the launchpad config and what the profile names), ``metadata`` (what the Dagster UI shows), ``quality``
(Great Expectations inside asset checks), ``shards`` (shard-partitioned assets).
"""
