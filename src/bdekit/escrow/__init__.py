"""escrow."""
