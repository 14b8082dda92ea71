"""Each system's training phases (losses) and its registry entry (``SPEC``)."""
