"""Metrics that score saliency maps: perturbation curves, ROAD, localisation."""
