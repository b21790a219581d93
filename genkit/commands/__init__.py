"""Implementations of the `genkit` subcommands. The CLI is an edge, like app.py: it is the one part of
the genkit package that imports pipelines/ (lazily); the library modules never do."""
