"""One execution of a plan: the step contract, the engine, one handler per step kind, and
the execution record."""
