"""Data shipped with bertrt (package `bertrt.data`): SQuAD v1.1 dev, see README.md beside this file."""
