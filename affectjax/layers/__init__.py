"""Reusable building blocks shared by the model families."""
