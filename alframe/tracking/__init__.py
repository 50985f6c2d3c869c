"""MLflow: the store, one run per job with its per-round metrics and artifacts, links into the
MLflow UI, and the sweep callback that prepares a shared store."""
