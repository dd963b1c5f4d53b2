"""One handler per step kind; the engine registers them in an explicit dict."""
