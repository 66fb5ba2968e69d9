"""The dashboard's widgets, one per module: the four views, the job detail pane and the status line."""
