"""Engines: the in-process transformers engine, and (optionally) a remote one over HTTP."""
