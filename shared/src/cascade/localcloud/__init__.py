"""The local cloud: emulators, functions, an event router and their supervisor.

``cascade up`` starts it on loopback only; see docs/local-cloud.md.
"""
