"""LLMSafeSpace sandbox gateway: authenticated, authorised, signed access to sandboxes' runtimes (docs/gateway.md)."""
