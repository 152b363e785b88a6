"""Work in progress."""
def read_v2sim(*a, **k): raise NotImplementedError
