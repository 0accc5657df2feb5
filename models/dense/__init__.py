"""Dense (fully connected) architectures: the perceptron and the multi-layer perceptron."""
