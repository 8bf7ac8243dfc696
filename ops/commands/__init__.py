"""One module per subcommand group of ``tagus``; each exposes ``register(sub)``."""
