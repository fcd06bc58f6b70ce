"""What the workers of one host share: the runtime directory, striped locks and the shared
files under it."""
