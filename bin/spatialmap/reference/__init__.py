"""The single-cell reference: preparation, gene matching with the slides, cell2location signatures."""
