"""Public transport seen from the control room: bus priority at the junctions."""
