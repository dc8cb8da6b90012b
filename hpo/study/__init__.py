"""Studies: creating and resuming them, one trial from parameters to stored result (the
objective), and the worker loop that claims trial slots."""
