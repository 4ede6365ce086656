"""Watching a served model: probes and gates, reference profiles, drift."""
