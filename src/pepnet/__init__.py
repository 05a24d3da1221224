"""pepnet: multi-domain, multi-task recommendation with PEPNet (Chang et al., KDD 2023).

Python API::

    import pepnet
    run = pepnet.fit("configs/ciao.yaml", out="runs/ciao")
    print(run.report.format_table())
    run = pepnet.Run.load("runs/ciao")
    preds = run.predict("new_logs.parquet")
"""
from .config import ConfigError, ExperimentConfig, load_config
from .errors import DataError
from .run import Run, fit

__version__ = "0.1.0"
__all__ = ["ConfigError", "DataError", "ExperimentConfig", "Run", "__version__", "fit", "load_config"]
