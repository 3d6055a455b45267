"""Configuration: files -> documents with marks -> schema -> frozen models -> cross-file checks.

Raw YAML data never leaves this package; everything after it sees the models of
triggerd.config.models. The entry points live in triggerd.config.loader.
"""
