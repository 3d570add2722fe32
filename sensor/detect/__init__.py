"""Detection engines: the rule engine (rules/) and the ML window scorer (model.py)."""
