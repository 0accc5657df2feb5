"""Training: the shared supervised LightningModule, the Trainer and its callbacks."""
