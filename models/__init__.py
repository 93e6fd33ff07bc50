"""The embedded model (package `bertrt.models`): the wheel carries its vocab and config, a checkout also the
checkpoint (see minilm-l6-h384-squad11/MODEL_CARD.md)."""
