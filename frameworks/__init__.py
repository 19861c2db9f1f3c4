"""One file per framework: <name>_adapter.py, found by harness.adapter.discover()."""
