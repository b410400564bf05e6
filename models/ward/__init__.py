"""models.ward: an independent synthetic ward-patient simulator emitting FHIR R4 Bundles (see README.md).

Use `from models.ward.generate import generate` (the package does not re-export it, so that the submodule
name `generate` and `python -m models.ward.generate` stay unambiguous)."""
