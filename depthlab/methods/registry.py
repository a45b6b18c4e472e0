"""The method registry: a study names a method by string."""

from depthlab.registry import Registry

METHODS = Registry("method")
register = METHODS.register
