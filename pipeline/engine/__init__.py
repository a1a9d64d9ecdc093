"""Text generation for the pipeline's generation stages: one interface, several backends."""
