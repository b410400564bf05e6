"""models.ward: an independent synthetic ward-patient simulator emitting FHIR R4 Bundles (see README.md)."""
from models.ward.generate import draw_site, generate, news2  # noqa: F401
