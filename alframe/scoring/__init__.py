"""Scoring the pool: the outputs contract (:class:`~alframe.scoring.outputs.ModelOutputs`), class
probabilities, MC dropout, embeddings, evaluation and multi-device scoring."""
