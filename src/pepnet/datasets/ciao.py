"""The Ciao product-rating data set (Tang, Gao, Liu, WSDM 2012), vendored with the package.

Attribution, licence and statistics: ``ciao_data/README.md`` beside this module. The file is checked
against its published sha256 before use, so a damaged install is reported instead of trained on.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import DataError

RATINGS = Path(__file__).parent / "ciao_data" / "ratings.parquet"
RATINGS_SHA256 = "63b3b96798e7e1bbcc0958da3182e91478a8e9637440b582edcb7d7369c2d27f"


def ratings_path(verify: bool = True) -> Path:
    """Path of the vendored ``ratings.parquet`` (284,086 rows), verified against its checksum."""
    if not RATINGS.is_file():
        raise DataError("the vendored Ciao ratings are missing; reinstall pepnet", file=str(RATINGS))
    if verify:
        digest = hashlib.sha256(RATINGS.read_bytes()).hexdigest()
        if digest != RATINGS_SHA256:
            raise DataError(f"checksum mismatch: sha256 {digest}, expected {RATINGS_SHA256}", file=str(RATINGS))
    return RATINGS
