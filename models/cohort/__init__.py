"""The seeded synthetic inpatient cohort (``models.cohort.generate``) and its self-test."""
