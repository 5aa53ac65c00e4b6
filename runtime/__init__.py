"""The reference in-sandbox runtime: an HTTP server on port 8080 that runs commands, stateful
Python sessions and file operations for the API component (docs/runtime-contract.md).

Standard library plus `cryptography` (Ed25519 verification), Python 3.11+. Run: python -m runtime."""
