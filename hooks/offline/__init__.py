"""Offline tools: the `llmsafespace` command (cli) and the simulated Metacontroller it and the
convergence tests run the hooks through (render, simulate). Nothing here serves HTTP."""
