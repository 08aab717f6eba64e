"""sketchcore_intrinsic_dim (under construction)."""
