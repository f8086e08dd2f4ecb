"""Quality control of slides and the raw-count rule every reader applies."""
