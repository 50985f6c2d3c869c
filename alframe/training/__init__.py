"""Training each round's fresh model: network, LightningModule and Trainer, the protocols of the
papers, per-round seeds, multi-device fits."""
