"""pepnet: multi-domain, multi-task recommendation with PEPNet (Chang et al., KDD 2023).

Python API::

    import pepnet
    run = pepnet.fit("configs/ciao.yaml", out="runs/ciao")
    print(run.report.format_table())
    run = pepnet.Run.load("runs/ciao")
    preds = run.predict("new_logs.parquet")

Names are imported on first use, so that ``import pepnet`` (and the ``pepnet`` command's ``--help``) does not
load torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
_LAZY = {"ConfigError": ".config", "ExperimentConfig": ".config", "load_config": ".config",
         "DataError": ".errors", "Run": ".run", "fit": ".run"}
__all__ = ["ConfigError", "DataError", "ExperimentConfig", "Run", "__version__", "fit", "load_config"]

if TYPE_CHECKING:
    from .config import ConfigError, ExperimentConfig, load_config
    from .errors import DataError
    from .run import Run, fit


def __getattr__(name: str) -> Any:
    """The API names on first use; a submodule (``pepnet.run``, ...) is imported when first reached as well."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'pepnet' has no attribute {name!r}") from None
    globals()[name] = value
    return value
