"""The two errors typedlm raises for user mistakes."""


class ShapeError(TypeError):
    """A tensor's shape or dtype disagrees with what a layer, loss or composition declares.

    The message names the layer or function, the argument, the dimension, the expected size and where
    that size comes from (e.g. ``cfg.d_model=64``), and the actual shape.
    """


class ConfigError(ValueError):
    """A configuration value breaks a rule; the message names the field, the value and the rule."""
