"""The labeling page: a small local web app serving its templates and static assets."""
