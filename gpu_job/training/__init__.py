"""Training of both stages: one loop (loop.py), each stage's data and checkpoint (first_stage.py,
texture_stage.py). Sits beside the inference path and imports it; nothing on the inference path
imports this."""
