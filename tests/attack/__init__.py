"""The attack suite: hostile inputs through the local cloud (tests/attack/test_attacks.py)."""
