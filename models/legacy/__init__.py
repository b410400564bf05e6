"""Frozen pipelines of model versions that are still served but no longer retrained by ``models.train``."""
