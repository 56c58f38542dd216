"""Screens of the steertui app (one per module), plus the engine and snapshot they share."""
