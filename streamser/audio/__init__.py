"""Where audio enters: decoding and resampling, sources, voice activity, segmentation.

Inside streamser all audio is mono float32 at ``SAMPLE_RATE_HZ``; positions are
integer sample indices at that rate.
"""

from typing import Final

SAMPLE_RATE_HZ: Final = 16000
"""The one sample rate of audio inside streamser (Whisper's and the VAD's)."""
