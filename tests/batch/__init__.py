"""Tests of `bdekit batch` (bdekit.batch)."""
