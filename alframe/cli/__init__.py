"""Command-line entry points, parsers and mains only: ``alframe`` (:mod:`alframe.cli.run`),
``alframe-report``, ``alframe-export``, ``alframe-predict`` and the MLflow UI links (``make ui``)."""
