"""One module per experiment: plain config in, plain results out, never prints."""
