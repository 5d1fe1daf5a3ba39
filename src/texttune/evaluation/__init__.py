"""Evaluation: streaming classification metrics (``metrics``) and calibration (``calibration``)."""
