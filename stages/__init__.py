"""Pipeline stages, one module each. Stages never import each other."""
