"""Work in progress."""
def read_matpower(*a, **k): raise NotImplementedError
