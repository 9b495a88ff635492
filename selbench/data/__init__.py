"""Data: the dataset contract, the built-in datasets, and their splits as batches on the device."""
