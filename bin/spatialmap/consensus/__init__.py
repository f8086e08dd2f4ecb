"""Agreement between the methods and their consensus."""
