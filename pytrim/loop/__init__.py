"""The iterated Network Trimming run: its schedule (`schedule`), keyed state that resumes
(`state`), the run and its children (`run`), the steps (`steps`), evaluations and decisions
(`evaluation`), the automated plan (`plan`), the driver (`driver`) and the report (`report`).

Layer: above criteria; imports criteria and the layers below it.
"""
