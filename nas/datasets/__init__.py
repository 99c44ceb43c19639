"""Data shipped with ``nas``: the bundled default dataset (see ``NOTICE`` for its source and licence)."""
