"""sketchcore_spectrum (under construction)."""
