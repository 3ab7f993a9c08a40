"""One module per verb (or verb group); each defines ``register(app)`` and ``ORDER``."""
