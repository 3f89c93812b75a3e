"""The data plane: the inference gateway (see app.py)."""
