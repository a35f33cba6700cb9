"""Commands to equipment: who may send what, the safety interlocks, delivery to devices and their answers."""
