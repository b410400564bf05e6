"""The pipeline that trained ``deterioration`` 1.0.0 (own simulator, own featurizer), kept so that
``models/deterioration/1.0.0/model.pt`` and the demo fixtures stay reproducible. See models/README.md."""
