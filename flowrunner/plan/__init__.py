"""Model to runnable plan: the plan types, the compiler and the static data-flow checks."""
