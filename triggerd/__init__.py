"""triggerd: a declarative trigger daemon."""

__version__ = "0.1.0"
