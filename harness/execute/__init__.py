"""How cells run: the worker process and its environment, probes, ceilings, and one file per executor."""
