"""Bundled traffic scenarios for ``litellm-payg simulate --scenario NAME`` (JSONL files, package data)."""
