"""One handler per step kind; :data:`flowrunner.execution.engine.HANDLERS` maps kinds to them."""
