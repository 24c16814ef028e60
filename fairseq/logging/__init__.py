"""Meters, progress bars and log formats."""
