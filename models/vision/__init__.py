"""Vision architectures: convolutional classifiers (Keras CNN, LeNet-5, AlexNet, VGG, ResNet) and the localizer."""
