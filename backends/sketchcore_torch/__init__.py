"""sketchcore_torch (under construction)."""
