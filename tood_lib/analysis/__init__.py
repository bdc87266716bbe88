"""Measuring and drawing the model: parameter/MAC counts, alignment statistics, plots, widgets."""
