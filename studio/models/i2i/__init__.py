"""Image-to-image models: trained on pairs of images (input A, target B), they translate an
input image into an output image."""
