"""Widgets of the steertui app, one per module."""
