"""Run records, plots, comparison tables and HTML reports."""
