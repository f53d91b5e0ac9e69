"""softserve's training job: fit, export to ONNX, check, publish (``python -m training --help``).

Importing this package imports no torch; the stages that need it import it themselves.
"""
