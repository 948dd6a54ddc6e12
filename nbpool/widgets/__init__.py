"""Views of a pool for notebooks: insights and worker state, as widgets that update live.

``render`` builds HTML and text from plain data (no ipywidgets needed); ``views`` holds the
widgets. The progress bar lives in ``nbpool.progress``.
"""
