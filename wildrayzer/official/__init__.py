"""The authors' released checkpoint: key mapping onto this package's model, conversion, numerical parity."""
