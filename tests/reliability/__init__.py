"""The reliability and security proof: bad input, auth, faults, delivery
semantics, secrets, cold start and load, each recorded as figures.

``make reliability`` runs this package with the ``tests.reliability.table``
plugin, which prints one table (cases tried, expected outcomes, unexpected
outcomes, rows/objects changed where none should be) and writes it to
``reliability-results.json``; ``python -m tests.reliability`` prints that
file again. ``RELIABILITY_SCALE=full`` makes every area heavier (more
hypothesis examples, more kill trials, a 30 s load run); the default
("smoke") keeps the package cheap enough for the main suite.
"""
