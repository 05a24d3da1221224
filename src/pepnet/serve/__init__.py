"""``pepnet serve``: score requests over HTTP with micro-batching, metrics and live model updates."""
