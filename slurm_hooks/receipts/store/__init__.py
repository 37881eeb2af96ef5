"""receipts/store."""
