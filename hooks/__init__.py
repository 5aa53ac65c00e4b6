"""LLMSafeSpace Metacontroller hooks: pure functions from (request, now, config) to response."""
