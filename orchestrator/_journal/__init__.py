"""Journal backends and record types."""
