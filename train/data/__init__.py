"""Synthetic support conversations: glossary -> scenarios -> conversations (offline or via an endpoint)."""
