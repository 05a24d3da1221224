"""ParquetStream yields exactly the rows the in-memory encoder gives, row group by row group."""
from __future__ import annotations

import polars as pl
import torch

from pepnet.config import load_config
from pepnet.data.encoder import Encoder
from pepnet.data.stream import ParquetStream
from pepnet.datasets.synthetic import SyntheticSpec, write


def test_stream_matches_in_memory_encoding(tmp_path):
    spec = SyntheticSpec(n_rows=5000, n_users=200, n_items=500, tasks=("click", "like"), seed=1)
    path = write(spec, tmp_path / "d.parquet", chunk_rows=1500, progress=False)[0]
    cfg = load_config("synthetic.yaml")
    df = pl.read_parquet(path)
    enc = Encoder(cfg.schema_).fit(df.head(3000))
    full = enc.transform(df)
    stream = ParquetStream([path], enc, batch_size=400, prefetch=2)
    batches = list(stream)
    assert len(batches) == len(stream) == 3 * 4 + 2    # row groups of 1500, 1500, 1500, 500 rows
    assert max(len(b) for b in batches) == 400
    got = torch.cat([b.sparse for b in batches])
    assert torch.equal(got, torch.from_numpy(full.sparse))
    torch.testing.assert_close(torch.cat([b.labels for b in batches]), torch.from_numpy(full.labels), equal_nan=True)
    shuffled = torch.cat([b.sparse for b in ParquetStream([path], enc, 400, shuffle=True)])
    assert not torch.equal(shuffled, got) and torch.equal(shuffled.sort(0).values, got.sort(0).values)
