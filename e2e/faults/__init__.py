"""The fault suite: SIGKILL each process of the local platform at seeded random points of
each kind of rollout while clients call, repair with `ffctl up`, and check what must hold
after every fault (see invariants.py). test_faults.py runs it at CI's size; bench/faults.py
at a larger one, printing a table."""
