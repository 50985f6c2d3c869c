"""The active-learning loop: the experiment (round 0, then train -> log -> stop? -> score -> query
-> label), its round hooks (pseudo-labels, stopping rules, machine-label evidence, model logging)."""
