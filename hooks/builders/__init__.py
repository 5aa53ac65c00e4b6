"""One small module per child kind. Builders are pure: plain values in, one JSON object out."""
