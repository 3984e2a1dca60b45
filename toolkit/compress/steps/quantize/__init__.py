"""The `quantize` step: parameters and plan (step.py), what it does per scheme (apply.py),
the PT2E quantizer set-up (qconfig.py) and the torch export/prepare/convert flow (pt2e_flow.py)."""
