"""Work in progress."""
def read_instance(*a, **k): raise NotImplementedError
def write_instance(*a, **k): raise NotImplementedError
