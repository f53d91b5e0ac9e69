"""Thin blueprints: decode the request, call the model, encode the answer — nothing else."""
