"""sketchcore_tda (under construction)."""
