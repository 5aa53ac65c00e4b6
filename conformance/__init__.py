"""The runtime conformance check: does an image (or a running endpoint) keep the runtime contract
(docs/runtime-contract.md)? `python -m conformance --help`, or `llmsafespace conformance`."""
