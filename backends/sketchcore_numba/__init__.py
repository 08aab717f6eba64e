"""sketchcore_numba (under construction)."""
