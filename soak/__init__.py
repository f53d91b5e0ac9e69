"""The soak (``python -m soak.run``, ``make soak``): see soak/run.py."""
