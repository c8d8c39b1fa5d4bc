"""The floor every other package stands on: errors, settings, the artifact store, run
records, claims, paths, messages, events, the bus, clients, observability, topology and
the typed pipeline config. It imports nothing else of Cascade."""
