"""Export a trained run for serving: a ``torch.export`` program plus the encoder that feeds it."""
from .serving import ExportError, Predictor, export_run

__all__ = ["ExportError", "Predictor", "export_run"]
