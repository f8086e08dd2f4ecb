"""Region-level summaries: per spatial domain, every method's composition and the ambiguous locations."""
