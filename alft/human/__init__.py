"""The human side: the labeling transaction and its routes (page, label files, Label Studio)."""
