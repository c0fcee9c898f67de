"""Energy-based models: a scalar energy over images, low on the data; samples come from a
Markov chain that wanders towards low energy. The normalising constant is intractable, so
these models report no likelihood."""
