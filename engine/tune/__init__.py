"""`tune`: searching model settings for a corpus under a time budget (issue 29)."""
