"""What an utterance is recognised as: features, Whisper ASR, ONNX emotion models.

``models`` holds a graph's contract (its ONNX metadata and card); ``recognizer``
runs every model on one utterance.
"""
