"""`falconer.ruletest`: declarative rule tests, run for real (`falconer test`).

A suite (`suite.py`) names a rule, a context and steps and the expected outcome; the
runner (`runner.py`) runs every test against one real sensor, the actor (`actor.py`)
is the process tree each test runs as, and `report.py` prints the table and JUnit XML.
It sits beside the sensor, not inside it: it drives `falconer sensor` from outside, as a
user would, and neither the engine nor the sensor depends on it.
"""
