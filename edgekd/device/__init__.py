"""The device side: everything a board runs with only ``pip install "edgekd[device]"``.

Bundle reading, target profiles, the multi-student runtime, the bench command
and the contracts they share with the host. Modules here import only the
standard library, numpy, yaml/click and an interpreter (ai-edge-litert,
tflite-runtime or onnxruntime); the import-linter contracts in
``pyproject.toml`` enforce it, imports inside functions included.
"""
