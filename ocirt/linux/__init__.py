"""Linux specifics: the ctypes boundary (libc), kernel constants, /proc readers."""
