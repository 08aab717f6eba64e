"""sketchcore_cupy (under construction)."""
