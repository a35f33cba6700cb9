"""Safety interlocks: pure rules that decide whether the hypervisor may ask a piece of equipment for
something. No I/O here, so that each rule can be proved with property-based tests (tests/unit/test_safety_*.py).

The equipment stays autonomous and safe on its own (a junction controller has its conflict monitor);
these rules are the control centre's own line of defence, applied before any command is sent.
"""
