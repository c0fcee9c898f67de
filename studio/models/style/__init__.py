"""Style transfer families: networks trained to paint any image in one style."""
