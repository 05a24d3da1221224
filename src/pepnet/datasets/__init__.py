"""Data set generators and loaders for pepnet (see :mod:`pepnet.datasets.synthetic`)."""
