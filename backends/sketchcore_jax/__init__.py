"""sketchcore_jax (under construction)."""
